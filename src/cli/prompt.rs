//! The CLI's prompter: environment variables, PIN files, or a no-echo prompt on the terminal.
//! In batch mode it never asks.

use keyward::prompt::{AckRequest, Confirm, PromptError, Prompter, SecretKind, SecretRequest};
use keyward::secret::Pin;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

pub struct CliPrompter {
    pub batch: bool,
    pub pin_file: Option<PathBuf>,
    pub so_pin_file: Option<PathBuf>,
    pub allow_final_pin_try: bool,
    pub yes: bool,
}

fn env_secret(var: &str) -> Option<Pin> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Pin::new)
}

impl CliPrompter {
    fn interactive(&self) -> bool {
        !self.batch && std::io::stderr().is_terminal() && std::fs::File::open("/dev/tty").is_ok()
    }

    /// The passphrase of a backup (never the keystore's): KEYWARD_BACKUP_PASSPHRASE, else a
    /// no-echo prompt.
    fn backup_passphrase(&self, new: bool) -> Result<Pin, PromptError> {
        if let Some(pin) = env_secret("KEYWARD_BACKUP_PASSPHRASE") {
            return Ok(pin);
        }
        if !self.interactive() {
            return Err(PromptError::NotInteractive {
                what: "the backup passphrase".into(),
                hint: "Set KEYWARD_BACKUP_PASSPHRASE.".into(),
            });
        }
        if !new {
            return self.ask("Backup passphrase: ");
        }
        let a = self.ask("New backup passphrase (at least 8 characters): ")?;
        let b = self.ask("Repeat it: ")?;
        if a.expose() != b.expose() {
            return Err(PromptError::Io(
                "the two entries differ; nothing was changed".into(),
            ));
        }
        Ok(a)
    }

    fn ask(&self, prompt: &str) -> Result<Pin, PromptError> {
        rpassword::prompt_password(prompt)
            .map(Pin::new)
            .map_err(|e| PromptError::Io(format!("cannot read from the terminal: {e}")))
    }
}

impl Prompter for CliPrompter {
    fn secret(&mut self, req: &SecretRequest<'_>) -> Result<Pin, PromptError> {
        if req.token == keyward::backup::PASSPHRASE_PROMPT
            && matches!(req.kind, SecretKind::Passphrase | SecretKind::NewPassphrase)
        {
            return self.backup_passphrase(req.kind == SecretKind::NewPassphrase);
        }
        // A PIN change needs two PINs: the new one comes from KEYWARD_NEW_PIN when set.
        if req.kind == SecretKind::NewUserPin {
            if let Some(pin) = env_secret("KEYWARD_NEW_PIN") {
                return Ok(pin);
            }
        }
        if req.kind == SecretKind::NewPuk {
            if let Some(pin) = env_secret("KEYWARD_NEW_PUK") {
                return Ok(pin);
            }
        }
        // A YubiKey's PIV application calls its security-officer credential the PUK.
        let puk = req.kind == SecretKind::SoPin
            && req.info.map(|i| i.kind) == Some(keyward::token::TokenKind::Piv);
        let none = None;
        let (var, file, what) = match req.kind {
            SecretKind::SoPin if puk => ("KEYWARD_PUK", &none, format!("the PUK of {}", req.token)),
            SecretKind::NewPuk => (
                "KEYWARD_NEW_PUK",
                &none,
                format!("the new PUK of {}", req.token),
            ),
            SecretKind::UserPin | SecretKind::NewUserPin => (
                "KEYWARD_PIN",
                &self.pin_file,
                format!("the user PIN of {}", req.token),
            ),
            SecretKind::SoPin => (
                "KEYWARD_SO_PIN",
                &self.so_pin_file,
                format!("the SO PIN of {}", req.token),
            ),
            SecretKind::Passphrase | SecretKind::NewPassphrase => (
                "KEYWARD_PASSPHRASE",
                &self.pin_file,
                "the software keystore passphrase".to_string(),
            ),
        };
        if let Some(path) = file {
            return Pin::from_file(path)
                .map_err(|e| PromptError::Io(format!("cannot read {}: {e}", path.display())));
        }
        if let Some(pin) = env_secret(var) {
            return Ok(pin);
        }
        if !self.interactive() {
            return Err(PromptError::NotInteractive {
                what,
                hint: match var {
                    "KEYWARD_PUK" | "KEYWARD_NEW_PUK" => format!("Set {var}."),
                    "KEYWARD_SO_PIN" => format!("Set {var} or pass --so-pin-file FILE."),
                    _ => format!("Set {var} or pass --pin-file FILE."),
                },
            });
        }
        let status = req
            .info
            .map(|i| format!(" [{}]", i.pin.describe()))
            .unwrap_or_default();
        match req.kind {
            SecretKind::NewPassphrase | SecretKind::NewUserPin | SecretKind::NewPuk => {
                let label = match req.kind {
                    SecretKind::NewPassphrase => {
                        "New passphrase for the software keystore (at least 8 characters): "
                            .to_string()
                    }
                    SecretKind::NewPuk => format!("New PUK for {}: ", req.token),
                    _ => format!("New user PIN for {}: ", req.token),
                };
                let a = self.ask(&label)?;
                let b = self.ask("Repeat it: ")?;
                if a.expose() != b.expose() {
                    return Err(PromptError::Io(
                        "the two entries differ; nothing was changed".into(),
                    ));
                }
                Ok(a)
            }
            SecretKind::UserPin => self.ask(&format!("PIN for {}{status}: ", req.token)),
            SecretKind::SoPin if puk => self.ask(&format!("PUK for {}: ", req.token)),
            SecretKind::SoPin => self.ask(&format!("SO PIN for {}: ", req.token)),
            SecretKind::Passphrase => self.ask("Software keystore passphrase: "),
        }
    }

    fn confirm(&mut self, q: &Confirm) -> Result<bool, PromptError> {
        match q {
            Confirm::FinalPinTry { .. } if self.allow_final_pin_try => return Ok(true),
            Confirm::Destructive { .. } if self.yes => return Ok(true),
            _ => {}
        }
        if !self.interactive() {
            return Err(PromptError::NotInteractive {
                what: "a confirmation".into(),
                hint: match q {
                    Confirm::FinalPinTry { token } => format!(
                        "{token} has one PIN try left; pass --allow-final-pin-try to risk it"
                    ),
                    Confirm::Destructive { .. } => "pass --yes to confirm".into(),
                },
            });
        }
        let mut tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|e| PromptError::Io(e.to_string()))?;
        write!(tty, "{} [y/N] ", q.question()).map_err(|e| PromptError::Io(e.to_string()))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(tty), &mut line)
            .map_err(|e| PromptError::Io(e.to_string()))?;
        Ok(matches!(line.trim(), "y" | "Y" | "yes"))
    }

    fn acknowledge(&mut self, req: &AckRequest<'_>) -> Result<String, PromptError> {
        if !self.interactive() {
            return Err(PromptError::NotInteractive {
                what: format!(
                    "the acknowledgement of {} ({}) for step {}",
                    req.person, req.role, req.step
                ),
                hint: "run on a terminal, or pass --batch with a participants file declaring it under [acknowledgements]".into(),
            });
        }
        let mut tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|e| PromptError::Io(e.to_string()))?;
        write!(
            tty,
            "  {} ({}): type your name to acknowledge \"{}\" (empty to stop): ",
            req.person, req.role, req.title
        )
        .map_err(|e| PromptError::Io(e.to_string()))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(tty), &mut line)
            .map_err(|e| PromptError::Io(e.to_string()))?;
        Ok(line.trim().to_owned())
    }

    fn notify(&mut self, message: &str) {
        eprintln!("{message}");
    }

    fn notifier(&mut self) -> Option<keyward::token::Notifier> {
        Some(Box::new(|message: &str| eprintln!("{message}")))
    }
}
