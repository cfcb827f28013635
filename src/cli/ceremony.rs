//! `keyward ceremony list|show|run|verify`.

use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::backup::Custodian;
use keyward::ceremony::{self, Ceremony, CeremonyError, ParticipantsFile, Person, Source, Status};
use keyward::prompt::{AckRequest, Prompter};
use keyward::token::PublicKey;
use keyward::Error;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CeremonyCmd {
    /// The ceremonies shipped with keyward.
    #[command(after_help = "Example:\n  keyward ceremony list")]
    List {
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// A ceremony's roles, parameters and steps, without running anything.
    #[command(
        after_help = "Examples:\n  keyward ceremony show root-key\n  keyward ceremony show ./my-ceremony.toml"
    )]
    Show {
        /// A shipped ceremony's name, or a script file (TOML).
        script: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Run a ceremony step by step: each step needs the acknowledgement of its participants;
    /// a failed step stops the ceremony, which resumes with --resume.
    #[command(
        after_help = "Examples:\n  keyward --home /media/offline/home ceremony run root-key --dir root-2026-11 \\\n      --participants people.toml --set tokens=hsm-a,hsm-b --set scopes=registry.example.com/team/app\n  keyward --batch --home /srv/kw ceremony run rotate --participants people.toml --set key=release \\\n      --set scopes=registry.example.com/app\n  keyward ceremony run --resume root-2026-11/progress.json\n\nInteractive: each participant acknowledges each step by typing their name.\n--batch: acknowledgements come from [acknowledgements] in the participants file; a missing one is refused.\nPINs and passphrases: prompt, --pin-file, or KEYWARD_PIN / KEYWARD_PASSPHRASE; never argv."
    )]
    Run {
        /// A shipped ceremony's name (see `ceremony list`), or a script file (TOML).
        #[arg(required_unless_present = "resume")]
        script: Option<String>,
        /// Continue a stopped ceremony from its progress file (DIR/progress.json); the rest of
        /// the command line, if repeated, must match what the ceremony started with.
        #[arg(long, value_name = "PROGRESS")]
        resume: Option<PathBuf>,
        /// The ceremony directory: progress, transcript, public keys, backup, bundle (new or
        /// empty; default ./ceremony-NAME-TIME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// A parameter of the ceremony; repeatable.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A TOML file of parameters (`name = "value"`); --set wins.
        #[arg(long, value_name = "FILE")]
        params: Option<PathBuf>,
        /// A TOML file naming the people per role (and, for --batch, their acknowledgements).
        #[arg(long, value_name = "FILE")]
        participants: Option<PathBuf>,
        /// The administrator (instead of, or besides, the participants file).
        #[arg(long, value_name = "NAME")]
        administrator: Option<String>,
        /// A custodian and the age recipient of their backup share; repeatable.
        #[arg(long = "custodian", value_name = "NAME=AGE_RECIPIENT")]
        custodians: Vec<Custodian>,
        /// A witness; repeatable.
        #[arg(long = "witness", value_name = "NAME")]
        witnesses: Vec<String>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Check a transcript: signature, every recorded file digest, and (with --home) that the
    /// audit log chains it.
    #[command(
        after_help = "Examples:\n  keyward ceremony verify root-2026-11/transcript.json\n  keyward --home /srv/kw ceremony verify root-2026-11/transcript.json --trust root-1.pub.pem\n\nOnly transcript.json is signed; transcript.md is a rendering of it."
    )]
    Verify {
        transcript: PathBuf,
        /// The public key that must have signed the transcript.
        #[arg(long, value_name = "PUBKEY.pem")]
        trust: Option<PathBuf>,
        #[command(flatten)]
        fmt: FormatArg,
    },
}

fn params_file(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| CeremonyError::Params(format!("{}: {e}", path.display())))?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<Vec<_>, Error>>()?
                .join(","),
            other => {
                return Err(CeremonyError::Params(format!(
                    "{}: {k} = {other} is not a string, number, boolean or list",
                    path.display()
                ))
                .into())
            }
        };
        out.insert(k, s);
    }
    Ok(out)
}

fn print_step_head(v: &ceremony::StepView, verbose: bool) {
    println!("\nstep {}/{} {}: {}", v.number, v.total, v.id, v.title);
    if verbose {
        if !v.instructions.is_empty() {
            println!("  {}", v.instructions);
        }
        for c in &v.checklist {
            println!("  [ ] {c}");
        }
        if let Some(e) = &v.last_error {
            println!("  (an earlier attempt failed: {e})");
        }
    }
    println!(
        "  must acknowledge: {}",
        v.required
            .iter()
            .map(|(p, r)| format!("{p} ({r})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Asks each participant still missing to type their name. Empty input stops asking.
fn ask_acknowledgements(c: &mut Ceremony, prompter: &mut dyn Prompter) -> Result<(), Error> {
    let Some(view) = c.current() else {
        return Ok(());
    };
    let ceremony = c.script().name.clone();
    for (person, role) in c.missing() {
        for _ in 0..3 {
            let typed = prompter.acknowledge(&AckRequest {
                ceremony: &ceremony,
                step: &view.id,
                title: &view.title,
                person: &person,
                role: &role,
            })?;
            if typed.trim().is_empty() {
                // Declined: run_step refuses the step and saves where the ceremony stopped.
                return Ok(());
            }
            match c.acknowledge_typed(&person, &typed) {
                Ok(()) => break,
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    Ok(())
}

fn print_finished(f: &ceremony::Finished) {
    println!(
        "\nceremony complete: transcript {} (sha256 {}), signed with {} (key id {}), recorded in the audit log as entry {}",
        f.transcript.display(),
        f.sha256,
        f.signed_by,
        &f.key_id[..16],
        f.audit_seq
    );
    println!(
        "  {} is a rendering of it for people; only the JSON is signed",
        f.markdown.display()
    );
}

#[allow(clippy::too_many_arguments)]
fn run_ceremony(
    ctx: &mut Ctx,
    script: Option<String>,
    resume: Option<PathBuf>,
    dir: Option<PathBuf>,
    set: Vec<String>,
    params: Option<PathBuf>,
    participants: Option<PathBuf>,
    administrator: Option<String>,
    custodians: Vec<Custodian>,
    witnesses: Vec<String>,
    format: Format,
) -> Result<(), Error> {
    let batch = ctx.prompter.batch;
    let mut given = match &params {
        Some(p) => params_file(p)?,
        None => BTreeMap::new(),
    };
    for s in set {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| CeremonyError::Params(format!("--set {s:?}: expected NAME=VALUE")))?;
        given.insert(k.trim().to_owned(), v.to_owned());
    }
    let named_people = participants.is_some()
        || administrator.is_some()
        || !custodians.is_empty()
        || !witnesses.is_empty();
    let (mut people, declared) = match participants {
        Some(f) => ParticipantsFile::load(&f)?.split(),
        None => Default::default(),
    };
    let person = |name: String| Person {
        name,
        recipient: None,
        share: None,
        identity: None,
    };
    if let Some(a) = administrator {
        people.add("administrator", person(a))?;
    }
    for cu in custodians {
        people.add(
            "custodians",
            Person {
                recipient: Some(cu.recipient),
                ..person(cu.name)
            },
        )?;
    }
    for w in witnesses {
        people.add("witnesses", person(w))?;
    }
    let mut c = if let Some(progress) = resume {
        // The same command line with --resume added continues the ceremony; what it names must
        // be what the ceremony started with (only acknowledgements may be new).
        let c = Ceremony::resume(&progress)?;
        let differs = |what: String| {
            Error::from(CeremonyError::Progress(format!(
                "{what}; a resumed ceremony keeps its script, directory, parameters and people (only acknowledgements may be added)"
            )))
        };
        if let Some(name) = &script {
            let source = Source::resolve(name)?;
            if source.sha256() != c.progress().script_sha256 {
                return Err(differs(format!(
                    "{name} is not the script the ceremony started with ({})",
                    c.progress().script_origin
                )));
            }
        }
        if let Some(d) = &dir {
            if std::path::absolute(d).map_err(|e| Error::io(d, e))? != c.dir() {
                return Err(differs(format!(
                    "--dir {} is not the ceremony's directory {}",
                    d.display(),
                    c.dir().display()
                )));
            }
        }
        for (k, v) in &given {
            let was = c.progress().params.get(k);
            if was != Some(v) {
                return Err(differs(format!(
                    "parameter {k} was {:?} when the ceremony started, not {v:?}",
                    was.map(String::as_str).unwrap_or("(none)")
                )));
            }
        }
        if named_people {
            c.check_same_participants(&people)?;
        }
        c
    } else {
        let name = script.unwrap_or_default();
        let source = Source::resolve(&name)?;
        let dir = dir.unwrap_or_else(|| {
            let t = time::OffsetDateTime::now_utc();
            PathBuf::from(format!(
                "ceremony-{}-{:04}{:02}{:02}T{:02}{:02}{:02}",
                source.script.name,
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ))
        });
        Ceremony::load(source, &given, people, &dir)?
    };
    if batch && declared.is_empty() && c.current().is_some() {
        eprintln!(
            "note: --batch takes the acknowledgements from [acknowledgements] in the participants file; none are declared"
        );
    }
    let text = format == Format::Text;
    if text {
        let p = c.progress();
        println!(
            "ceremony {} — {} (run {})\n  directory {}\n  progress  {}",
            c.script().name,
            c.script().title,
            p.run_id,
            c.dir().display(),
            c.progress_path().display()
        );
        for (role, person) in p.participants.everyone() {
            println!(
                "  {:<13} {}",
                ceremony::participants::role_word(role),
                person.name
            );
        }
    }
    loop {
        match c.status() {
            Status::Completed(f) => {
                if text {
                    print_finished(&f);
                } else {
                    print_json(&f)?;
                }
                return Ok(());
            }
            Status::ReadyToFinish => {
                if text {
                    println!("\nsigning the transcript");
                }
                let f = c.finish(&ctx.kw, &mut ctx.prompter)?;
                if text {
                    print_finished(&f);
                } else {
                    print_json(&f)?;
                }
                return Ok(());
            }
            Status::Next { index } => {
                let Some(view) = c.view(index) else {
                    return Err(Error::Other("the ceremony lost its step".into()));
                };
                if text {
                    print_step_head(&view, !batch);
                }
                if batch {
                    c.acknowledge_declared(&declared)?;
                } else {
                    ask_acknowledgements(&mut c, &mut ctx.prompter)?;
                }
                if text {
                    let acks = c
                        .current()
                        .map(|v| v.acknowledged)
                        .unwrap_or_default()
                        .iter()
                        .map(|a| format!("{} ({})", a.person, a.role))
                        .collect::<Vec<_>>();
                    if !acks.is_empty() {
                        println!("  acknowledged by {}", acks.join(", "));
                    }
                }
                let report = c.run_step(&ctx.kw, &mut ctx.prompter)?;
                if text {
                    println!("  done");
                    for (k, v) in &report.outputs {
                        println!("    {k:<22} {v}");
                    }
                    for a in &report.artifacts {
                        println!(
                            "    file {:<17} {} sha256 {}",
                            a.kind,
                            a.path,
                            &a.sha256[..16]
                        );
                    }
                }
            }
        }
    }
}

pub fn run(ctx: &mut Ctx, cmd: CeremonyCmd) -> Result<(), Error> {
    match cmd {
        CeremonyCmd::List { fmt } => {
            let scripts = Source::builtins()?;
            if ctx.format(&fmt) == Format::Json {
                let list: Vec<_> = scripts
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "name": s.script.name, "title": s.script.title,
                            "summary": s.script.summary, "sha256": s.sha256(),
                            "roles": s.script.roles, "params": s.script.params,
                            "steps": s.script.steps.iter().map(|st| &st.id).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                return print_json(&list);
            }
            for s in &scripts {
                println!("{:<14} {}", s.script.name, s.script.summary);
                let required: Vec<&str> = s
                    .script
                    .params
                    .iter()
                    .filter(|(_, p)| p.required)
                    .map(|(k, _)| k.as_str())
                    .collect();
                if !required.is_empty() {
                    println!("{:<14} needs --set {}", "", required.join(", --set "));
                }
            }
            println!(
                "\n`keyward ceremony show NAME` shows a ceremony's roles, parameters and steps."
            );
            Ok(())
        }
        CeremonyCmd::Show { script, fmt } => {
            let s = Source::resolve(&script)?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&s.script);
            }
            let sc = &s.script;
            println!(
                "{} — {}  ({}, sha256 {})",
                sc.name,
                sc.title,
                s.origin,
                &s.sha256()[..16]
            );
            if !sc.description.is_empty() {
                println!("\n{}", sc.description.trim());
            }
            println!("\nroles:");
            for (r, spec) in &sc.roles {
                println!(
                    "  {r:<13} min {} max {}  {}{}",
                    spec.min.as_deref().unwrap_or("0"),
                    spec.max.as_deref().unwrap_or("-"),
                    spec.description,
                    if spec.requires.is_empty() {
                        String::new()
                    } else {
                        format!(" (each declares {})", spec.requires.join(", "))
                    }
                );
            }
            println!("\nparameters:");
            for (k, p) in &sc.params {
                let d = if p.required {
                    "required".to_string()
                } else {
                    format!("default {:?}", p.default.as_deref().unwrap_or(""))
                };
                println!("  {k:<16} {d:<18} {}", p.description);
            }
            println!("\nsteps:");
            for (i, st) in sc.steps.iter().enumerate() {
                println!(
                    "  {}. {} ({}) — {}; acknowledged by {}",
                    i + 1,
                    st.id,
                    st.kind,
                    st.title,
                    st.acknowledge.join(", ")
                );
            }
            println!("\ntranscript signed with {}", sc.transcript.sign_with);
            Ok(())
        }
        CeremonyCmd::Run {
            script,
            resume,
            dir,
            set,
            params,
            participants,
            administrator,
            custodians,
            witnesses,
            fmt,
        } => {
            let format = ctx.format(&fmt);
            run_ceremony(
                ctx,
                script,
                resume,
                dir,
                set,
                params,
                participants,
                administrator,
                custodians,
                witnesses,
                format,
            )
        }
        CeremonyCmd::Verify {
            transcript,
            trust,
            fmt,
        } => {
            let trust = trust
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .map_err(|e| Error::io(&p, e))
                        .and_then(|pem| PublicKey::from_pem(&pem).map_err(Error::from))
                })
                .transpose()?;
            let kw = ctx.home_given.then_some(&ctx.kw);
            let r = ceremony::transcript::verify(&transcript, trust.as_ref(), kw)?;
            if ctx.format(&fmt) == Format::Json {
                print_json(&r)?;
            } else {
                println!(
                    "transcript {} — ceremony {} (run {}), completed {}",
                    r.transcript.display(),
                    r.ceremony,
                    r.run_id,
                    r.completed
                );
                println!("  sha256     {}", r.sha256);
                println!(
                    "  signed by  {} (key id {}; {})",
                    r.signed_by,
                    &r.key_id[..r.key_id.len().min(16)],
                    match r.signer {
                        "trusted" => "the --trust key",
                        "known" => "a key version of this home",
                        _ => "only the public key inside the transcript vouches for it: pass --trust PUBKEY.pem or --home",
                    }
                );
                let ok = r.artifacts.iter().filter(|a| a.status == "ok").count();
                println!(
                    "  files      {ok} of {} match their recorded SHA-256",
                    r.artifacts.len()
                );
                for a in r.artifacts.iter().filter(|a| a.status != "ok") {
                    println!(
                        "    {:<8} {} ({}, step {})",
                        a.status, a.path, a.kind, a.step
                    );
                }
                match (r.audit_checked, r.audit_entry) {
                    (true, Some(seq)) => println!(
                        "  audit log  entry {seq} (ceremony_completed) carries this transcript's SHA-256; the chain verifies"
                    ),
                    (true, None) => println!("  audit log  NOT FOUND in {}", ctx.kw.home().dir().display()),
                    (false, _) => println!(
                        "  audit log  not checked: pass --home DIR (or set KEYWARD_HOME) to check that the home's log chains this transcript"
                    ),
                }
                for w in &r.warnings {
                    println!("  warning: {w}");
                }
                for p in &r.problems {
                    println!("  PROBLEM: {p}");
                }
            }
            if r.ok() {
                if ctx.format(&fmt) == Format::Text {
                    println!("transcript verified");
                }
                Ok(())
            } else {
                Err(CeremonyError::Verify(r.problems.join("; ")).into())
            }
        }
    }
}
