//! The people of a ceremony, by role, and — for batch runs — their declared acknowledgements.
//! Format: docs/FORMATS.md "Participants file".

use super::script::{Script, ROLES};
use super::CeremonyError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A role's word for one person: `administrator`, `custodian`, `witness`.
pub fn role_word(role: &str) -> &'static str {
    match role {
        "administrator" => "administrator",
        "custodians" => "custodian",
        "witnesses" => "witness",
        _ => "participant",
    }
}

/// One person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    pub name: String,
    /// An age recipient (custodians receiving a share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// A share file the person brought (restore drills).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<PathBuf>,
    /// Their age identity file (opens their share). A path only: never the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
}

/// Who holds which role. The progress file and the transcript keep this (never an
/// acknowledgement declared in advance: those are per run).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participants {
    #[serde(default)]
    pub administrator: Vec<Person>,
    #[serde(default)]
    pub custodians: Vec<Person>,
    #[serde(default)]
    pub witnesses: Vec<Person>,
}

/// A participants file: the people, plus acknowledgements declared for batch runs
/// (`step id -> names`; the step id `*` stands for every step).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantsFile {
    #[serde(default)]
    pub administrator: Vec<Person>,
    #[serde(default)]
    pub custodians: Vec<Person>,
    #[serde(default)]
    pub witnesses: Vec<Person>,
    #[serde(default)]
    pub acknowledgements: BTreeMap<String, Vec<String>>,
}

impl ParticipantsFile {
    pub fn load(path: &Path) -> Result<Self, CeremonyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CeremonyError::Participants(format!("cannot read {}: {e}", path.display()))
        })?;
        let mut f: ParticipantsFile = toml::from_str(&text)
            .map_err(|e| CeremonyError::Participants(format!("{}: {e}", path.display())))?;
        // Relative share and identity paths are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in f
            .administrator
            .iter_mut()
            .chain(f.custodians.iter_mut())
            .chain(f.witnesses.iter_mut())
        {
            for file in [&mut p.share, &mut p.identity].into_iter().flatten() {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        Ok(f)
    }

    pub fn split(self) -> (Participants, BTreeMap<String, Vec<String>>) {
        (
            Participants {
                administrator: self.administrator,
                custodians: self.custodians,
                witnesses: self.witnesses,
            },
            self.acknowledgements,
        )
    }
}

impl Participants {
    pub fn role(&self, role: &str) -> &[Person] {
        match role {
            "administrator" => &self.administrator,
            "custodians" => &self.custodians,
            "witnesses" => &self.witnesses,
            _ => &[],
        }
    }

    fn role_mut(&mut self, role: &str) -> Option<&mut Vec<Person>> {
        match role {
            "administrator" => Some(&mut self.administrator),
            "custodians" => Some(&mut self.custodians),
            "witnesses" => Some(&mut self.witnesses),
            _ => None,
        }
    }

    /// Adds people given on the command line.
    pub fn add(&mut self, role: &str, person: Person) -> Result<(), CeremonyError> {
        self.role_mut(role)
            .ok_or_else(|| CeremonyError::Participants(format!("unknown role {role:?}")))?
            .push(person);
        Ok(())
    }

    /// Every person with their role, in role order.
    pub fn everyone(&self) -> Vec<(&'static str, &Person)> {
        ROLES
            .iter()
            .flat_map(|r| self.role(r).iter().map(move |p| (*r, p)))
            .collect()
    }

    /// The role of a person.
    pub fn role_of(&self, name: &str) -> Option<&'static str> {
        self.everyone()
            .into_iter()
            .find(|(_, p)| p.name == name)
            .map(|(r, _)| r)
    }

    /// Checks the people against the script's roles (`min`/`max` rendered with `lookup`).
    pub fn check(
        &self,
        script: &Script,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), CeremonyError> {
        let bad = |m: String| CeremonyError::Participants(m);
        let mut names = BTreeSet::new();
        for (role, p) in self.everyone() {
            crate::backup::shares::check_custodian_name(&p.name)
                .map_err(|e| bad(e.replace("custodian name", "participant name")))?;
            if !names.insert(p.name.as_str()) {
                return Err(bad(format!(
                    "{} is declared twice: each participant holds one role, so that the people who witness are not the people who act",
                    p.name
                )));
            }
            if !script.roles.contains_key(role) {
                return Err(bad(format!(
                    "ceremony {} has no {role} role, but {} is declared as one",
                    script.name, p.name
                )));
            }
        }
        for (role, spec) in &script.roles {
            let n = self.role(role).len();
            let count = |v: &Option<String>, what: &str| -> Result<Option<usize>, CeremonyError> {
                let Some(v) = v else { return Ok(None) };
                let r = super::script::render(v, lookup).map_err(bad)?;
                r.trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|_| bad(format!("role {role}: {what} {r:?} is not a number")))
            };
            if let Some(min) = count(&spec.min, "min")? {
                if n < min {
                    return Err(bad(format!(
                        "ceremony {} needs at least {min} {role} ({}); {n} declared",
                        script.name, spec.description
                    )));
                }
            }
            if let Some(max) = count(&spec.max, "max")? {
                if n > max {
                    return Err(bad(format!(
                        "ceremony {} takes at most {max} {role}; {n} declared",
                        script.name
                    )));
                }
            }
            for p in self.role(role) {
                for need in &spec.requires {
                    let missing = match need.as_str() {
                        "recipient" => p.recipient.as_deref().is_none_or(str::is_empty),
                        "share" => p.share.is_none(),
                        "identity" => p.identity.is_none(),
                        _ => false,
                    };
                    if missing {
                        return Err(bad(format!(
                            "{} ({role}) must declare `{need}` in the participants file{}",
                            p.name,
                            if need == "recipient" {
                                " (or --custodian NAME=AGE_RECIPIENT)"
                            } else {
                                ""
                            }
                        )));
                    }
                }
                if let Some(r) = &p.recipient {
                    crate::backup::crypt::parse_one_recipient(r)
                        .map_err(|e| bad(format!("the recipient of {} ({role}): {e}", p.name)))?;
                }
            }
        }
        Ok(())
    }

    /// Comma-separated names of a role.
    pub fn names(&self, role: &str) -> String {
        self.role(role)
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
