//! The Keys screen's lifecycle work: state changes, rotation, cryptoperiod policy, ending
//! overlaps, re-signing images and exporting a distribution bundle. Each opens a form; what the
//! form would do is named in a confirmation before any job runs (the same operations as
//! `keyward key …`, `image resign` and `bundle export`, through the same core).

use crate::keys::{format_duration, parse_duration, parse_time, State as KeyState, Version};
use crate::token::Algorithm;
use crate::tui::action::Action;
use crate::tui::job::{Job, PivOp};
use crate::tui::state::{Field, Form, FormKind, Modal, State};
use std::path::PathBuf;

fn selected(state: &mut State) -> Option<Version> {
    match state.keys.selected() {
        Some(v) => Some(v.clone()),
        None => {
            state.message = Some("no key selected: generate one with g".into());
            None
        }
    }
}

fn form(state: &mut State, kind: FormKind, title: String, fields: Vec<Field>, note: String) {
    state.modals.push(Modal::Form(Form {
        kind,
        title,
        fields,
        focus: 0,
        note: Some(note),
        error: None,
    }));
}

/// `t`: move the selected version to another state SP 800-57 allows (destruction is `D`).
pub fn open_state_change(state: &mut State) {
    let Some(v) = selected(state) else { return };
    let targets: Vec<String> = v
        .state
        .legal_targets()
        .into_iter()
        .filter(|s| *s != KeyState::Destroyed)
        .map(|s| s.as_str().to_owned())
        .collect();
    if targets.is_empty() {
        state.message = Some(format!(
            "{}/{} is {}: {}",
            v.key,
            v.version,
            v.state,
            if v.state == KeyState::Destroyed {
                "nothing leaves destroyed"
            } else {
                "the only state after it is destroyed (D)"
            }
        ));
        return;
    }
    let now = crate::keys::format_time(state.now);
    form(
        state,
        FormKind::StateChange {
            key: v.key.clone(),
            version: v.version,
        },
        format!("Change the state of {}/{} ({})", v.key, v.version, v.state),
        vec![
            Field::choice("New state", targets, 0),
            Field::text("Reason", ""),
            Field::text("Compromised since", &now),
        ],
        "The reason goes into the audit log. \"Compromised since\" is used only for compromised: signatures made after it are not trusted".into(),
    );
}

/// `R`: rotate the selected key: a new active version; the old ones stay active for the overlap.
pub fn open_rotate(state: &mut State) {
    let Some(v) = selected(state) else { return };
    let newest = state
        .keys
        .versions
        .iter()
        .filter(|x| x.key == v.key)
        .max_by_key(|x| x.version)
        .cloned()
        .unwrap_or(v);
    let mut tokens: Vec<String> = vec![newest.token.clone()];
    for t in &state.tokens.entries {
        if t.info.is_some() && t.error.is_none() && !tokens.contains(&t.name) {
            tokens.push(t.name.clone());
        }
    }
    let soft = crate::token::soft::SOFT_TOKEN_NAME.to_owned();
    if !tokens.contains(&soft) {
        tokens.push(soft);
    }
    let algorithms: Vec<String> = Algorithm::ALL
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    let alg = algorithms
        .iter()
        .position(|a| a == newest.algorithm.as_str())
        .unwrap_or(0);
    let policy = state.keys.policies.get(&newest.key).copied();
    let overlap = policy.map_or("0s".to_owned(), |p| format_duration(p.overlap));
    form(
        state,
        FormKind::Rotate {
            key: newest.key.clone(),
        },
        format!("Rotate {}", newest.key),
        vec![
            Field::choice("Token", tokens, 0),
            Field::choice("Algorithm", algorithms, alg),
            Field::text("Overlap", &overlap),
        ],
        match policy {
            Some(p) => format!(
                "Policy: rotate every {}, overlap {}. During the overlap images are signed by every active version",
                format_duration(p.rotate_every),
                format_duration(p.overlap)
            ),
            None => "No policy (p sets one). Overlap 0s deactivates the old versions at once".into(),
        },
    );
}

/// `p`: the selected key's cryptoperiod policy.
pub fn open_policy(state: &mut State) {
    let Some(v) = selected(state) else { return };
    let p = state.keys.policies.get(&v.key).copied();
    form(
        state,
        FormKind::Policy { key: v.key.clone() },
        format!("Rotation policy of {}", v.key),
        vec![
            Field::text(
                "Rotate every",
                &p.map_or("90d".into(), |p| format_duration(p.rotate_every)),
            ),
            Field::text(
                "Overlap",
                &p.map_or("14d".into(), |p| format_duration(p.overlap)),
            ),
        ],
        "Durations like 90d, 12h, 2w. The Keys screen and `key due` warn before a rotation is due"
            .into(),
    );
}

/// `S`: re-sign, with the newest active version, the images older versions signed.
pub fn open_resign(state: &mut State) {
    let Some(v) = selected(state) else { return };
    form(
        state,
        FormKind::Resign { key: v.key.clone() },
        format!("Re-sign images with the newest version of {}", v.key),
        vec![Field::text("Plain HTTP", &state.insecure_registries)],
        "Finds the images the audit log shows were signed by an older version and still exist, then asks before signing. Plain HTTP: registries (host:port) reached without TLS".into(),
    );
}

/// `b`: export a distribution bundle.
pub fn open_bundle_export(state: &mut State) {
    let key = state
        .keys
        .selected()
        .map(|v| v.key.clone())
        .unwrap_or_default();
    let mut signers = vec!["none".to_owned()];
    for v in &state.keys.versions {
        if v.state == KeyState::Active && !signers.contains(&v.key) {
            signers.push(v.key.clone());
        }
    }
    let day = crate::keys::format_time(state.now);
    form(
        state,
        FormKind::BundleExport,
        "Export a distribution bundle".into(),
        vec![
            Field::text("Keys", &key),
            Field::text("Scopes", ""),
            Field::text("Directory", &format!("bundle-{}", day.get(..10).unwrap_or("new"))),
            Field::choice("Sign with", signers, 0),
            Field::toggle("Keep deactivated", false),
            Field::toggle("Also .tar.gz", false),
        ],
        "Keys: names separated by spaces (empty: every key). Scopes: REGISTRY/REPO the verifier policies apply to. The directory must not exist".into(),
    );
}

/// `d`: deactivate every version whose rotation overlap has ended.
pub fn apply_due(state: &mut State) -> Option<Action> {
    let ended: Vec<String> = state
        .keys
        .due
        .iter()
        .filter(|d| d.action == "deactivate" && d.status == "overdue")
        .map(|d| format!("{}/{} (overlap ended {})", d.key, d.version, d.due))
        .collect();
    if ended.is_empty() {
        state.message = Some("no overlap has ended: nothing to deactivate".into());
        return None;
    }
    Some(Action::Confirm {
        title: "End rotation overlaps".into(),
        question: format!("Deactivate {}?", ended.join(", ")),
        loses: Some(
            "they stop signing; bundles exported from now on trust them only with \"keep deactivated\""
                .into(),
        ),
        job: Box::new(Job::ApplyDue),
    })
}

/// What a lifecycle form stands for: a confirmation naming the consequence, or a job.
pub fn submit(state: &State, form: &Form) -> Option<Result<Action, String>> {
    let v = |i: usize| form.fields.get(i).map(Field::value).unwrap_or_default();
    let list = |s: String| -> Vec<String> {
        s.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Some(match &form.kind {
        FormKind::StateChange { key, version } => (|| {
            let to: KeyState = v(0).parse()?;
            let reason = Some(v(1)).filter(|r| !r.is_empty());
            let name = format!("{key}/{version}");
            let (question, loses, since) = match to {
                    KeyState::Active => (format!("Activate {name}? It will sign."), None, None),
                    KeyState::Suspended => (
                        format!("Suspend {name}?"),
                        Some(format!("{name} signs nothing until it is resumed (set back to active); verifiers keep trusting it")),
                        None,
                    ),
                    KeyState::Deactivated => (
                        format!("Deactivate {name}?"),
                        Some(format!("{name} never signs again (deactivated can only become compromised or destroyed); bundles trust it only with \"keep deactivated\"")),
                        None,
                    ),
                    KeyState::Compromised => {
                        let since = v(2);
                        parse_time(&since)?;
                        if reason.is_none() {
                            return Err("say why (Reason): a compromise must be explained in the audit log".into());
                        }
                        (
                            format!("Mark {name} COMPROMISED since {since}?"),
                            Some(format!("{name} is revoked in every bundle exported from now on: images signed only by it are rejected; it never signs again and can only be destroyed")),
                            Some(since),
                        )
                    }
                    other => return Err(format!("{other} is not offered here")),
                };
            Ok(Action::Confirm {
                title: format!("{name}: {} -> {to}", current_state(state, key, *version)),
                question,
                loses,
                job: Box::new(Job::SetState {
                    key: key.clone(),
                    version: *version,
                    to,
                    reason,
                    since,
                }),
            })
        })(),
        FormKind::Rotate { key } => (|| {
            let token = v(0);
            let algorithm: Algorithm = v(1).parse()?;
            let overlap = parse_duration(&v(2))?;
            let active: Vec<String> = state
                .keys
                .versions
                .iter()
                .filter(|x| x.key == *key && x.state == KeyState::Active)
                .map(Version::name)
                .collect();
            let until = if active.is_empty() {
                "there is no active version to overlap with".to_owned()
            } else if overlap == 0 {
                format!("{} deactivated at once", active.join(", "))
            } else {
                format!(
                    "{} stay(s) active for {} (until about {}), and images signed meanwhile get every active version's signature",
                    active.join(", "),
                    format_duration(overlap),
                    crate::keys::format_time(state.now + overlap as i64)
                )
            };
            Ok(Action::Confirm {
                title: format!("Rotate {key}"),
                question: format!(
                    "Generate a new version of {key} ({algorithm}) on {token}, active at once? {until}."
                ),
                loses: (overlap == 0 && !active.is_empty()).then(|| {
                    format!("{} stop signing now; verifiers holding only an old bundle will not accept images signed from now on", active.join(", "))
                }),
                job: Box::new(Job::Rotate {
                    key: key.clone(),
                    token,
                    algorithm,
                    overlap,
                }),
            })
        })(),
        FormKind::Policy { key } => (|| {
            let rotate_every = parse_duration(&v(0))?;
            let overlap = parse_duration(&v(1))?;
            if rotate_every == 0 {
                return Err("rotate every must be longer than zero".into());
            }
            if overlap >= rotate_every {
                return Err("the overlap must be shorter than the rotation period".into());
            }
            Ok(Action::Run(Box::new(Job::SetPolicy {
                key: key.clone(),
                rotate_every,
                overlap,
            })))
        })(),
        FormKind::Resign { key } => Ok(Action::Run(Box::new(Job::PlanResign {
            key: key.clone(),
            insecure: list(v(0)),
        }))),
        FormKind::BundleExport => (|| {
            let keys = list(v(0));
            let scopes = list(v(1));
            if scopes.is_empty() {
                return Err(
                    "name at least one scope (REGISTRY/REPO): verifier policies must be scoped"
                        .into(),
                );
            }
            let output = v(2);
            if output.is_empty() {
                return Err("name the directory to write".into());
            }
            let sign_with = Some(v(3)).filter(|s| s != "none");
            let keep = form.fields.get(4).is_some_and(Field::is_on);
            let tar = form.fields.get(5).is_some_and(Field::is_on);
            for k in &keys {
                if !state.keys.versions.iter().any(|x| x.key == *k) {
                    return Err(format!("no key named {k}"));
                }
            }
            let chosen = state
                .keys
                .versions
                .iter()
                .filter(|x| keys.is_empty() || keys.contains(&x.key));
            let (trusted, revoked) = crate::bundle::partition(chosen, keep);
            if trusted.is_empty() {
                return Err("no version to trust: every selected version is pre-active, compromised or deactivated (turn on keep deactivated to keep old ones)".into());
            }
            let names = |vs: &[&Version]| {
                vs.iter()
                    .map(|x| format!("{} ({})", x.name(), x.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut question = format!(
                "Write a bundle to {output} for {}? It trusts {}",
                scopes.join(", "),
                names(&trusted)
            );
            if !revoked.is_empty() {
                question.push_str(&format!("; it revokes {}", names(&revoked)));
            }
            question.push_str(&match &sign_with {
                Some(k) => format!("; SHA256SUMS signed with {k}."),
                None => "; NOT signed.".into(),
            });
            Ok(Action::Confirm {
                title: "Export a bundle".into(),
                question,
                loses: None,
                job: Box::new(Job::ExportBundle {
                    keys,
                    scopes,
                    output: PathBuf::from(output),
                    sign_with,
                    keep_deactivated: keep,
                    tar,
                }),
            })
        })(),
        FormKind::PivRetries { token } => (|| {
            let n = |i: usize, what: &str| -> Result<u8, String> {
                v(i).parse::<u8>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(format!("{what}: a number from 1 to 255"))
            };
            Ok(Action::Run(Box::new(Job::Piv {
                token: token.clone(),
                op: PivOp::SetRetries {
                    pin: n(0, "PIN tries")?,
                    puk: n(1, "PUK tries")?,
                },
            })))
        })(),
        _ => return None,
    })
}

/// The selected token, if it is a YubiKey (PIV); else says why not.
fn selected_yubikey(state: &mut State) -> Option<String> {
    let t = state.tokens.entries.get(state.tokens.cursor.selected)?;
    let piv = t.kind == crate::token::TokenKind::Piv;
    if piv {
        Some(t.name.clone())
    } else {
        state.message = Some(format!(
            "{} is not a YubiKey: PIV administration is for yubikey:SERIAL tokens",
            t.name
        ));
        None
    }
}

/// Tokens screen, a YubiKey selected: PIN, PUK and management-key administration. The core
/// asks for the PIN or PUK (tries left shown, the last try confirmed) and confirms resets.
pub fn piv_admin(state: &mut State, op: PivOp) -> Option<Action> {
    let token = selected_yubikey(state)?;
    let job = Job::Piv {
        token: token.clone(),
        op: op.clone(),
    };
    match op {
        PivOp::SetManagementKey => Some(Action::Confirm {
            title: format!("Management key of {token}"),
            question: format!(
                "Replace the management key of {token} with a new random one, stored on the card behind the PIN?"
            ),
            loses: Some("the current management key stops working: tools that use it need the PIN instead (ykman does this too)".into()),
            job: Box::new(job),
        }),
        _ => Some(Action::Run(Box::new(job))),
    }
}

/// `n`: the form for new PIN and PUK retry counts (the core then confirms the reset it implies).
pub fn open_piv_retries(state: &mut State) {
    let Some(token) = selected_yubikey(state) else {
        return;
    };
    form(
        state,
        FormKind::PivRetries {
            token: token.clone(),
        },
        format!("Retry counts of {token}"),
        vec![Field::text("PIN tries", "3"), Field::text("PUK tries", "3")],
        "1 to 255 each. The card then resets the PIN and PUK to their factory defaults: change them afterwards".into(),
    );
}

/// `A`: fetch and check the selected version's attestation (YubiKeys).
pub fn attest_selected(state: &mut State) -> Option<Action> {
    let v = selected(state)?;
    if !v.token.starts_with("yubikey:")
        && !state
            .tokens
            .entries
            .iter()
            .any(|t| t.name == v.token && t.kind == crate::token::TokenKind::Piv)
    {
        state.message = Some(format!(
            "{} lives on {}: only YubiKeys attest their keys",
            v.name(),
            v.token
        ));
        return None;
    }
    Some(Action::Run(Box::new(Job::Attest {
        key: v.key,
        version: v.version,
        token: v.token,
    })))
}

fn current_state(state: &State, key: &str, version: u32) -> String {
    state
        .keys
        .versions
        .iter()
        .find(|v| v.key == key && v.version == version)
        .map_or("?".into(), |v| v.state.to_string())
}

/// After a dry run: ask before adding the newest version's signature, naming the images.
pub fn resign_planned(
    state: &mut State,
    key: String,
    newest: Version,
    insecure: Vec<String>,
    items: Vec<crate::images::ResignItem>,
) -> Option<Action> {
    let to_sign: Vec<&crate::images::ResignItem> =
        items.iter().filter(|i| i.action == "would sign").collect();
    if to_sign.is_empty() {
        let mut lines = vec![format!(
            "Nothing to re-sign: every image an older version of {key} signed already carries {}'s signature, or is gone.",
            newest.name()
        )];
        lines.extend(items.iter().map(|i| format!("{}  {}", i.action, i.image)));
        state.modals.push(Modal::Info {
            title: format!("Re-sign with {}", newest.name()),
            lines,
        });
        return None;
    }
    let mut list: Vec<String> = to_sign
        .iter()
        .take(6)
        .map(|i| format!("{} (signed by {})", i.image, i.signed_by.join(", ")))
        .collect();
    if to_sign.len() > 6 {
        list.push(format!("and {} more", to_sign.len() - 6));
    }
    Some(Action::Confirm {
        title: format!("Re-sign with {}", newest.name()),
        question: format!(
            "Add {}'s signature to {} image(s): {}?",
            newest.name(),
            to_sign.len(),
            list.join("; ")
        ),
        loses: None,
        job: Box::new(Job::Resign {
            key,
            token: newest.token.clone(),
            insecure,
        }),
    })
}
