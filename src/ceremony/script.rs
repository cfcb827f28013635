//! Ceremony scripts: TOML files of roles, parameters and steps (docs/FORMATS.md "Ceremony
//! scripts"). Three ship inside the binary (`ceremonies/*.toml`).

use super::CeremonyError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const SCRIPT_FORMAT: &str = "keyward-ceremony/1";

/// The roles a ceremony knows, in the order they are shown.
pub const ROLES: [&str; 3] = ["administrator", "custodians", "witnesses"];

/// The scripts shipped in the binary: (name, TOML text).
pub const BUILTIN: [(&str, &str); 3] = [
    ("root-key", include_str!("../../ceremonies/root-key.toml")),
    ("rotate", include_str!("../../ceremonies/rotate.toml")),
    (
        "restore-drill",
        include_str!("../../ceremonies/restore-drill.toml"),
    ),
];

/// What a step does: each kind maps onto one core operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Checks that no network interface but loopback is up (or records an override).
    CheckOffline,
    /// Nothing but the participants' acknowledgement of the instructions and checklist.
    Confirm,
    /// `key generate` (optionally into a software keystore that must not exist yet).
    Generate,
    /// Copies a software key into tokens (`key_imported`), one token after another.
    Import,
    /// `backup create --shares M`, one share per custodian.
    Backup,
    /// `backup verify` with the shares and identities the custodians brought.
    BackupVerify,
    /// `backup drill` with the shares and identities the custodians brought.
    BackupDrill,
    /// `bundle export`.
    Bundle,
    /// Deletes the software-keystore copy of a version the tokens now hold.
    DestroySoftwareCopy,
    /// `key rotate`.
    Rotate,
    /// `key activate|suspend|resume|deactivate`.
    SetState,
    /// `key destroy`.
    Destroy,
    /// `audit checkpoint`.
    Checkpoint,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::CheckOffline => "check-offline",
            StepKind::Confirm => "confirm",
            StepKind::Generate => "generate",
            StepKind::Import => "import",
            StepKind::Backup => "backup",
            StepKind::BackupVerify => "backup-verify",
            StepKind::BackupDrill => "backup-drill",
            StepKind::Bundle => "bundle",
            StepKind::DestroySoftwareCopy => "destroy-software-copy",
            StepKind::Rotate => "rotate",
            StepKind::SetState => "set-state",
            StepKind::Destroy => "destroy",
            StepKind::Checkpoint => "checkpoint",
        }
    }

    /// (required, optional) keys of the step's `with` table.
    pub fn arguments(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            StepKind::CheckOffline => (&[], &["enforce"]),
            StepKind::Confirm => (&[], &[]),
            StepKind::Generate => (
                &["key"],
                &["token", "algorithm", "fresh_keystore", "inactive"],
            ),
            StepKind::Import => (&["key", "tokens"], &["version", "slot"]),
            StepKind::Backup => (&["output", "threshold"], &[]),
            StepKind::BackupVerify | StepKind::BackupDrill => (&["file"], &[]),
            StepKind::Bundle => (
                &["scopes", "output"],
                &["keys", "sign_with", "keep_deactivated"],
            ),
            StepKind::DestroySoftwareCopy => (&["key"], &["version", "keep_on"]),
            StepKind::Rotate => (&["key"], &["token", "algorithm", "overlap"]),
            StepKind::SetState => (&["key", "version", "state"], &["reason"]),
            StepKind::Destroy => (&["key", "version"], &["reason"]),
            StepKind::Checkpoint => (&["key"], &[]),
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role's rules: how many people, and what each must bring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    #[serde(default)]
    pub description: String,
    /// At least this many people (a number, or a `{{param}}`).
    #[serde(default)]
    pub min: Option<String>,
    #[serde(default)]
    pub max: Option<String>,
    /// What each person of the role must declare: `recipient` (an age recipient for their
    /// share), `share` and `identity` (files they brought to open a backup).
    #[serde(default)]
    pub requires: Vec<String>,
}

/// A parameter: given with `--set NAME=VALUE` or a params file, else its default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
}

/// How the transcript is signed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptSpec {
    /// The key that signs the transcript (its newest active version, or `sign_version`).
    pub sign_with: String,
    #[serde(default)]
    pub sign_version: Option<String>,
}

/// One step as the script declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub id: String,
    pub kind: StepKind,
    pub title: String,
    #[serde(default)]
    pub instructions: String,
    #[serde(default)]
    pub checklist: Vec<String>,
    /// Roles whose every declared person must acknowledge the step.
    #[serde(default)]
    pub acknowledge: Vec<String>,
    #[serde(default)]
    pub with: BTreeMap<String, String>,
}

/// A parsed, checked ceremony script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub format: String,
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleSpec>,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    pub transcript: TranscriptSpec,
    #[serde(rename = "step")]
    pub steps: Vec<StepSpec>,
}

/// A script with where it came from and its exact text (kept in the progress file, so a
/// resumed ceremony runs the script it started with).
#[derive(Clone, Debug)]
pub struct Source {
    /// `built-in root-key`, or the file's path.
    pub origin: String,
    pub text: String,
    pub script: Script,
}

impl Source {
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }

    /// Every shipped script.
    pub fn builtins() -> Result<Vec<Source>, CeremonyError> {
        BUILTIN
            .iter()
            .map(|(n, text)| Source::parse(&format!("built-in {n}"), text))
            .collect()
    }

    /// `NAME` of a shipped script, else a TOML file.
    pub fn resolve(name_or_file: &str) -> Result<Source, CeremonyError> {
        let looks_like_path = name_or_file.contains('/') || name_or_file.ends_with(".toml");
        if !looks_like_path {
            if let Some((n, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_file) {
                return Source::parse(&format!("built-in {n}"), text);
            }
        }
        let path = Path::new(name_or_file);
        match std::fs::read_to_string(path) {
            Ok(text) => Source::parse(&path.display().to_string(), &text),
            Err(e) if !looks_like_path && e.kind() == std::io::ErrorKind::NotFound => {
                Err(CeremonyError::Script(format!(
                    "no ceremony named {name_or_file:?} and no such file; shipped ceremonies: {}",
                    BUILTIN.map(|(n, _)| n).join(", ")
                )))
            }
            Err(e) => Err(CeremonyError::Script(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn parse(origin: &str, text: &str) -> Result<Source, CeremonyError> {
        let script: Script =
            toml::from_str(text).map_err(|e| CeremonyError::Script(format!("{origin}: {e}")))?;
        script
            .check()
            .map_err(|e| CeremonyError::Script(format!("{origin}: {e}")))?;
        Ok(Source {
            origin: origin.into(),
            text: text.into(),
            script,
        })
    }
}

/// Names that every template may use besides the parameters.
pub const BUILTIN_VARS: [&str; 6] = [
    "dir",
    "run_id",
    "ceremony",
    "administrator",
    "custodians",
    "witnesses",
];

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 40
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        || !id.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return Err(format!(
            "{what} {id:?}: use lower-case letters, digits, '-' and '_', starting with a letter"
        ));
    }
    Ok(())
}

impl Script {
    /// Checks what can be checked before any parameter is known.
    pub fn check(&self) -> Result<(), String> {
        if self.format != SCRIPT_FORMAT {
            return Err(format!("format {:?} is not {SCRIPT_FORMAT:?}", self.format));
        }
        check_id("ceremony name", &self.name)?;
        for r in self.roles.keys() {
            if !ROLES.contains(&r.as_str()) {
                return Err(format!(
                    "unknown role {r:?}; the roles are {}",
                    ROLES.join(", ")
                ));
            }
        }
        for (r, spec) in &self.roles {
            for need in &spec.requires {
                if !matches!(need.as_str(), "recipient" | "share" | "identity") {
                    return Err(format!(
                        "role {r}: unknown requirement {need:?} (recipient, share, identity)"
                    ));
                }
            }
        }
        for p in self.params.keys() {
            check_id("parameter", p)?;
            if BUILTIN_VARS.contains(&p.as_str()) {
                return Err(format!("parameter {p:?} shadows a built-in name"));
            }
        }
        if self.steps.is_empty() {
            return Err("a ceremony needs at least one step".into());
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for s in &self.steps {
            check_id("step id", &s.id)?;
            if self.params.contains_key(&s.id) || BUILTIN_VARS.contains(&s.id.as_str()) {
                return Err(format!(
                    "step id {:?} is also a parameter or built-in name",
                    s.id
                ));
            }
            if s.acknowledge.is_empty() {
                return Err(format!(
                    "step {}: name the roles that acknowledge it (acknowledge = [...])",
                    s.id
                ));
            }
            for r in &s.acknowledge {
                if !self.roles.contains_key(r) {
                    return Err(format!(
                        "step {}: role {r:?} is not declared under [roles]",
                        s.id
                    ));
                }
            }
            let (required, optional) = s.kind.arguments();
            for k in s.with.keys() {
                if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
                    let all: Vec<&str> = required.iter().chain(optional).copied().collect();
                    return Err(format!(
                        "step {} ({}): unknown argument {k:?}; it takes {}",
                        s.id,
                        s.kind,
                        if all.is_empty() {
                            "none".to_string()
                        } else {
                            all.join(", ")
                        }
                    ));
                }
            }
            for k in required {
                if !s.with.contains_key(*k) {
                    return Err(format!(
                        "step {} ({}): argument {k:?} is required",
                        s.id, s.kind
                    ));
                }
            }
            let mut texts: Vec<&str> = s.with.values().map(String::as_str).collect();
            texts.push(&s.title);
            texts.push(&s.instructions);
            texts.extend(s.checklist.iter().map(String::as_str));
            for t in texts {
                for var in placeholders(t)? {
                    self.check_var(&var, &seen)
                        .map_err(|e| format!("step {}: {e}", s.id))?;
                }
            }
            if !seen.insert(&s.id) {
                return Err(format!("two steps have the id {:?}", s.id));
            }
        }
        let mut texts = vec![self.transcript.sign_with.as_str()];
        texts.extend(self.transcript.sign_version.as_deref());
        for spec in self.roles.values() {
            texts.extend(spec.min.as_deref());
            texts.extend(spec.max.as_deref());
        }
        for t in texts {
            for var in placeholders(t)? {
                // The transcript is signed after every step: any step's outputs may be used.
                self.check_var(&var, &seen)?;
            }
        }
        if self.transcript.sign_with.trim().is_empty() {
            return Err(
                "[transcript] sign_with must name the key that signs the transcript".into(),
            );
        }
        Ok(())
    }

    fn check_var(&self, var: &str, earlier: &BTreeSet<&str>) -> Result<(), String> {
        if self.params.contains_key(var) || BUILTIN_VARS.contains(&var) {
            return Ok(());
        }
        if let Some((step, _)) = var.split_once('.') {
            if earlier.contains(step) {
                return Ok(());
            }
            return Err(format!(
                "{{{{{var}}}}} names the outputs of {step:?}, which is not an earlier step"
            ));
        }
        Err(format!(
            "{{{{{var}}}}} is neither a parameter nor a built-in name ({})",
            BUILTIN_VARS.join(", ")
        ))
    }

    /// The parameters with `given` applied over the defaults; refuses unknown and missing ones.
    pub fn resolve_params(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        for k in given.keys() {
            if !self.params.contains_key(k) {
                return Err(format!(
                    "unknown parameter {k:?} for ceremony {}; it takes {}",
                    self.name,
                    self.params.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for (k, spec) in &self.params {
            match given.get(k).or(spec.default.as_ref()) {
                Some(v) if !(spec.required && v.trim().is_empty()) => {
                    out.insert(k.clone(), v.clone());
                }
                _ if spec.required => missing.push(format!(
                    "{k} ({})",
                    if spec.description.is_empty() {
                        "no description"
                    } else {
                        &spec.description
                    }
                )),
                _ => {
                    out.insert(k.clone(), String::new());
                }
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "ceremony {} needs --set NAME=VALUE (or a --params file) for: {}",
                self.name,
                missing.join("; ")
            ));
        }
        Ok(out)
    }
}

/// The `{{name}}` placeholders of a template.
pub fn placeholders(t: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let j = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {t:?}"))?;
        let name = after[..j].trim();
        if name.is_empty() {
            return Err(format!("empty {{{{}}}} in {t:?}"));
        }
        out.push(name.to_owned());
        rest = &after[j + 2..];
    }
    Ok(out)
}

/// Replaces every `{{name}}` with `lookup(name)`.
pub fn render(t: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {t:?}"))?;
        let name = after[..j].trim();
        let value = lookup(name).ok_or_else(|| format!("{{{{{name}}}}} has no value yet"))?;
        out.push_str(&value);
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits a comma-separated list, dropping empty items.
pub fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_script_parses_and_checks() {
        let all = Source::builtins().unwrap();
        for ((name, _), s) in BUILTIN.iter().zip(&all) {
            assert_eq!(s.script.name, *name);
        }
    }

    #[test]
    fn templates_render_and_unknown_names_are_refused() {
        let lookup = |n: &str| (n == "key").then(|| "root".to_string());
        assert_eq!(render("{{key}}/{{ key }}", &lookup).unwrap(), "root/root");
        assert!(render("{{nope}}", &lookup).unwrap_err().contains("nope"));
        assert!(placeholders("{{open").is_err());
        let text = BUILTIN[0].1.replace("{{key}}.kwb", "{{later.version}}.kwb");
        let e = Source::parse("x", &text).unwrap_err().to_string();
        assert!(e.contains("not an earlier step"), "{e}");
    }

    #[test]
    fn unknown_arguments_roles_and_missing_params_are_named() {
        let text = BUILTIN[0]
            .1
            .replacen("[step.with]", "[step.with]\nbogus = \"1\"", 1);
        let e = Source::parse("x", &text).unwrap_err().to_string();
        assert!(e.contains("unknown argument \"bogus\""), "{e}");
        let text = BUILTIN[0].1.replacen(
            "acknowledge = [\"administrator\"",
            "acknowledge = [\"king\"",
            1,
        );
        let e = Source::parse("x", &text).unwrap_err().to_string();
        assert!(e.contains("role \"king\""), "{e}");
        let s = Source::resolve("root-key").unwrap();
        let e = s.script.resolve_params(&BTreeMap::new()).unwrap_err();
        assert!(e.contains("tokens"), "{e}");
        let mut given = BTreeMap::new();
        given.insert("colour".to_string(), "red".to_string());
        let e = s.script.resolve_params(&given).unwrap_err();
        assert!(e.contains("unknown parameter \"colour\""), "{e}");
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(list(" a, b,,c "), vec!["a", "b", "c"]);
        assert!(list("").is_empty());
    }
}
