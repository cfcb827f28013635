//! `PivToken`: the PIV application of a YubiKey, through the `yubikey` crate over PC/SC.
//!
//! - A card is named `yubikey:SERIAL`; keyward never guesses between two attached cards.
//! - A key version lives in a PIV slot: the object id is the slot in hex (`9c`, `82`..`95`).
//! - Next to every key keyward writes a self-signed certificate whose subject names the key
//!   version (`CN=release/3, OU=pin-always touch-cached, O=keyward`), so ykman and
//!   yubico-piv-tool show what a slot holds, and `keyward token scan` can find its keys again.
//! - The PIN is verified at login and kept (zeroized on drop) for the life of the session, so
//!   a batch of signatures needs one PIN entry even with a PIN-always slot.
//! - The yubikey crate's types stay in this file; the crate trace-logs whole APDUs, PIN
//!   included, so keyward compiles trace logging out (Cargo.toml, `log` features).

mod attest;

pub use attest::{
    load_extra_roots, verify_chain, Anchor, Attestation, YUBICO_PIV_ROOT_PEM,
    YUBICO_PIV_ROOT_SHA256, YUBICO_SOURCE,
};

use super::*;
use crate::secret::Pin;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use x509_cert::der::{Decode, Encode};
use yubikey::certificate::{yubikey_signer, Certificate};
use yubikey::piv::{self, AlgorithmId, ManagementSlotId, SlotId};
use yubikey::{MgmKey, MgmType, PinPolicy, Serial, TouchPolicy, YubiKey};

/// The token-name prefix of a YubiKey found over PC/SC: `yubikey:SERIAL`.
pub const PIV_PREFIX: &str = "yubikey";
pub const DEFAULT_PIN: &str = "123456";
pub const DEFAULT_PUK: &str = "12345678";
/// The PIV admin data object (Yubico): flags, salt, PIN-last-changed timestamp.
const ADMIN_DATA: u32 = 0x005f_ff00;

/// The PIN policy of a new key. Default: `always` (the PIV rule for 9c; keyward keeps the PIN
/// for the session, so a batch still needs one PIN entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinPolicyChoice {
    Never,
    Once,
    Always,
}

/// The touch policy of a new key. Default: `cached` (a touch proves presence and then covers
/// signatures for 15 seconds, so a batch needs one touch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TouchPolicyChoice {
    Never,
    Always,
    Cached,
}

pub const DEFAULT_PIN_POLICY: PinPolicyChoice = PinPolicyChoice::Always;
pub const DEFAULT_TOUCH_POLICY: TouchPolicyChoice = TouchPolicyChoice::Cached;

impl PinPolicyChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            PinPolicyChoice::Never => "never",
            PinPolicyChoice::Once => "once",
            PinPolicyChoice::Always => "always",
        }
    }
    fn to_yubikey(self) -> PinPolicy {
        match self {
            PinPolicyChoice::Never => PinPolicy::Never,
            PinPolicyChoice::Once => PinPolicy::Once,
            PinPolicyChoice::Always => PinPolicy::Always,
        }
    }
}

impl TouchPolicyChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            TouchPolicyChoice::Never => "never",
            TouchPolicyChoice::Always => "always",
            TouchPolicyChoice::Cached => "cached",
        }
    }
    fn to_yubikey(self) -> TouchPolicy {
        match self {
            TouchPolicyChoice::Never => TouchPolicy::Never,
            TouchPolicyChoice::Always => TouchPolicy::Always,
            TouchPolicyChoice::Cached => TouchPolicy::Cached,
        }
    }
}

impl FromStr for PinPolicyChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "never" => Ok(PinPolicyChoice::Never),
            "once" => Ok(PinPolicyChoice::Once),
            "always" => Ok(PinPolicyChoice::Always),
            other => Err(format!(
                "unknown PIN policy {other:?}; use never, once or always"
            )),
        }
    }
}

impl FromStr for TouchPolicyChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "never" => Ok(TouchPolicyChoice::Never),
            "always" => Ok(TouchPolicyChoice::Always),
            "cached" => Ok(TouchPolicyChoice::Cached),
            other => Err(format!(
                "unknown touch policy {other:?}; use never, always or cached"
            )),
        }
    }
}

impl fmt::Display for PinPolicyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TouchPolicyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Slots keyward picks by itself, in order: 9c (digital signature), then the 20 retired
/// key-management slots.
pub fn automatic_slots() -> Vec<u8> {
    std::iter::once(0x9c).chain(0x82..=0x95).collect()
}

/// Every slot that can hold a key keyward uses.
pub fn key_slots() -> Vec<u8> {
    [0x9a, 0x9c, 0x9d, 0x9e]
        .into_iter()
        .chain(0x82..=0x95)
        .collect()
}

/// Parses a slot as the user or the log names it (`9c`, `0x9c`, `82`).
pub fn parse_slot(s: &str) -> TokenResult<u8> {
    let t = s.trim().trim_start_matches("0x").to_ascii_lowercase();
    let slot = u8::from_str_radix(&t, 16)
        .ok()
        .filter(|b| key_slots().contains(b));
    slot.ok_or_else(|| {
        TokenError::Other(format!(
            "{s:?} is not a PIV key slot; use 9c (signature), 9a, 9d, 9e or a retired slot 82..95"
        ))
    })
}

fn slot_id(slot: u8) -> TokenResult<SlotId> {
    SlotId::try_from(slot).map_err(|_| TokenError::Other(format!("{slot:02x} is not a PIV slot")))
}

fn slot_hex(slot: u8) -> String {
    format!("{slot:02x}")
}

/// The data object holding a slot's certificate (SP 800-73-4, Yubico's retired slots).
fn cert_object(slot: u8) -> Option<u32> {
    match slot {
        0x9a => Some(0x005f_c105),
        0x9c => Some(0x005f_c10a),
        0x9d => Some(0x005f_c10b),
        0x9e => Some(0x005f_c101),
        0x82..=0x95 => Some(0x005f_c10d + u32::from(slot - 0x82)),
        0xf9 => Some(0x005f_ff01),
        _ => None,
    }
}

/// The certificate in a slot, or `None` for an empty or deleted one. Reads the object itself:
/// the crate's reader panics on an empty (deleted) certificate object.
fn read_cert(yk: &mut YubiKey, slot: u8) -> Result<Option<Certificate>, yubikey::Error> {
    let Some(id) = cert_object(slot) else {
        return Ok(None);
    };
    let buf = match yk.fetch_object(id) {
        Ok(b) => b,
        Err(e @ yubikey::Error::PcscError { .. }) => return Err(e),
        Err(_) => return Ok(None),
    };
    // 70 len DER [71 01 info] [FE 00]
    let der = match buf.as_slice() {
        [0x70, 0x82, h, l, rest @ ..] => rest.get(..usize::from(*h) << 8 | usize::from(*l)),
        [0x70, 0x81, n, rest @ ..] => rest.get(..usize::from(*n)),
        [0x70, n, rest @ ..] if *n < 0x80 => rest.get(..usize::from(*n)),
        _ => None,
    };
    Ok(der.and_then(|d| Certificate::from_bytes(d.to_vec()).ok()))
}

/// A YubiKey seen over PC/SC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CardSummary {
    pub serial: u32,
    pub firmware: String,
    pub reader: String,
}

impl CardSummary {
    pub fn token_name(&self) -> String {
        format!("{PIV_PREFIX}:{}", self.serial)
    }
}

/// Every YubiKey PIV application reachable over PC/SC. No PC/SC service or no reader means
/// no cards, not an error: keyward runs without smart-card support installed.
pub fn discover() -> Vec<CardSummary> {
    let Ok(mut ctx) = yubikey::reader::Context::open() else {
        return Vec::new();
    };
    let Ok(readers) = ctx.iter() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for reader in readers {
        let Ok(yk) = reader.open() else { continue };
        out.push(CardSummary {
            serial: yk.serial().0,
            firmware: yk.version().to_string(),
            reader: yk.name().to_owned(),
        });
        // Leave the card as it is: a reset would log other sessions out.
        let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
    }
    out.sort_by_key(|c| c.serial);
    out
}

/// Parses `yubikey:SERIAL`.
pub fn parse_token_name(name: &str) -> Option<Result<u32, String>> {
    let rest = name.strip_prefix(PIV_PREFIX)?.strip_prefix(':')?;
    Some(
        rest.parse::<u32>().map_err(|_| {
            format!("{name:?}: a YubiKey is named yubikey:SERIAL, e.g. yubikey:12345678")
        }),
    )
}

/// What keyward knows about a slot's key (from its certificate or the card's metadata).
#[derive(Clone, Copy, Debug, Default)]
struct SlotInfo {
    algorithm: Option<Algorithm>,
    pin: Option<PinPolicyChoice>,
    touch: Option<TouchPolicyChoice>,
}

struct Inner {
    yk: YubiKey,
    /// The verified PIN, kept to re-verify before PIN-always operations.
    pin: Option<Pin>,
    /// What a successful login taught: whether the PIN is the factory default.
    pin_is_default: Option<bool>,
    options: GenerateOptions,
    notifier: Option<Notifier>,
    last_touch_notice: Option<std::time::Instant>,
    slots: HashMap<u8, SlotInfo>,
}

/// One YubiKey's PIV application, opened by serial.
pub struct PivToken {
    name: String,
    serial: u32,
    inner: Mutex<Inner>,
}

/// Maps a yubikey crate error for the PIN.
fn map_err(token: &str, call: &'static str, e: yubikey::Error) -> TokenError {
    use yubikey::Error as E;
    match e {
        E::WrongPin { tries: 0 } | E::PinLocked => TokenError::PinLocked {
            token: token.to_owned(),
        },
        E::WrongPin { tries } => TokenError::PinIncorrect {
            token: token.to_owned(),
            tries_left: Some(tries.into()),
        },
        E::NotFound => TokenError::NotPresent {
            token: token.to_owned(),
        },
        E::PcscError {
            inner:
                Some(
                    pcsc::Error::NoSmartcard
                    | pcsc::Error::RemovedCard
                    | pcsc::Error::NoReadersAvailable
                    | pcsc::Error::ReaderUnavailable
                    | pcsc::Error::UnknownReader
                    | pcsc::Error::NoService
                    | pcsc::Error::ServiceStopped,
                ),
        } => TokenError::NotPresent {
            token: token.to_owned(),
        },
        other => TokenError::Backend {
            token: token.to_owned(),
            call,
            detail: other.to_string(),
        },
    }
}

/// Maps a yubikey crate error for the PUK (the crate reports both as `WrongPin`).
fn map_puk_err(token: &str, call: &'static str, e: yubikey::Error) -> TokenError {
    use yubikey::Error as E;
    match e {
        E::WrongPin { tries: 0 } | E::PinLocked => TokenError::PukLocked {
            token: token.to_owned(),
        },
        E::WrongPin { tries } => TokenError::PukIncorrect {
            token: token.to_owned(),
            tries_left: Some(tries.into()),
        },
        other => map_err(token, call, other),
    }
}

/// PIN and PUK format: 6 to 8 ASCII characters (checked before anything reaches the card).
pub fn check_pin_format(what: &str, pin: &str, min: usize) -> TokenResult<()> {
    let n = pin.len();
    if n < min || n > 8 || !pin.is_ascii() {
        // Refused before the card sees it: a malformed PIN would still cost a try.
        return Err(TokenError::Other(format!(
            "a YubiKey {what} has {min} to 8 ASCII characters (this one has {n}); nothing was sent to the card"
        )));
    }
    Ok(())
}

/// The subject keyward writes into a slot's certificate.
fn subject(label: &str, pin: PinPolicyChoice, touch: TouchPolicyChoice) -> String {
    format!("CN={label},OU=pin-{pin} touch-{touch},O=keyward")
}

/// The subject of the certificate keyward leaves in a slot whose key it destroyed. Before
/// firmware 5.7 a key cannot be deleted, only overwritten, and from 5.3 the card's metadata
/// reports the throwaway key; this certificate says the slot is free (and tells ykman users).
const DESTROYED_SUBJECT: &str = "CN=empty (key destroyed by keyward),OU=destroyed,O=keyward";

/// Whether a slot's certificate is keyward's "destroyed" marker.
fn is_destroyed_marker(cert: &Certificate) -> bool {
    x509_cert::name::Name::from_str(DESTROYED_SUBJECT)
        .is_ok_and(|marker| cert.cert.tbs_certificate.subject == marker)
}

/// Reads keyward's subject back: (label, pin policy, touch policy). `None` for a
/// certificate keyward did not write.
fn parse_subject(
    name: &x509_cert::name::Name,
) -> Option<(String, Option<PinPolicyChoice>, Option<TouchPolicyChoice>)> {
    const CN: &str = "2.5.4.3";
    const OU: &str = "2.5.4.11";
    const O: &str = "2.5.4.10";
    let mut cn = None;
    let mut ou = None;
    let mut o = None;
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            let value = atv_string(&atv.value);
            match atv.oid.to_string().as_str() {
                CN => cn = value,
                OU => ou = value,
                O => o = value,
                _ => {}
            }
        }
    }
    if o.as_deref() != Some("keyward") {
        return None;
    }
    let (mut pin, mut touch) = (None, None);
    for part in ou.unwrap_or_default().split_whitespace() {
        if let Some(p) = part.strip_prefix("pin-") {
            pin = p.parse().ok();
        } else if let Some(t) = part.strip_prefix("touch-") {
            touch = t.parse().ok();
        }
    }
    Some((cn?, pin, touch))
}

fn atv_string(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    if let Ok(s) = value.decode_as::<Utf8StringRef<'_>>() {
        return Some(s.as_str().to_owned());
    }
    if let Ok(s) = value.decode_as::<PrintableStringRef<'_>>() {
        return Some(s.as_str().to_owned());
    }
    None
}

/// The PKCS#1 v1.5 block for an RSA signature over SHA-256 (the card does raw RSA).
fn pkcs1_sha256_block(data: &[u8], modulus_len: usize) -> TokenResult<Vec<u8>> {
    const DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let t_len = DIGEST_INFO.len() + 32;
    if modulus_len < t_len + 11 {
        return Err(TokenError::Other("RSA modulus too short".into()));
    }
    let mut block = vec![0x00, 0x01];
    block.resize(modulus_len - t_len - 1, 0xFF);
    block.push(0x00);
    block.extend_from_slice(&DIGEST_INFO);
    block.extend_from_slice(&Sha256::digest(data));
    Ok(block)
}

/// What the card signs for `algorithm`: keyward's rule is ECDSA over SHA-256 for both curves;
/// for P-384 the 32-byte digest is left-padded to the field size, which leaves its value (and
/// so the signature) unchanged, as ykman does.
fn sign_input(algorithm: Algorithm, data: &[u8]) -> TokenResult<(Vec<u8>, AlgorithmId)> {
    let digest = Sha256::digest(data);
    Ok(match algorithm {
        Algorithm::P256 => (digest.to_vec(), AlgorithmId::EccP256),
        Algorithm::P384 => {
            let mut v = vec![0u8; 16];
            v.extend_from_slice(&digest);
            (v, AlgorithmId::EccP384)
        }
        Algorithm::Rsa2048 => (pkcs1_sha256_block(data, 256)?, AlgorithmId::Rsa2048),
        other => {
            return Err(TokenError::Other(format!(
                "a YubiKey PIV slot does not hold {other} keys"
            )))
        }
    })
}

fn piv_algorithm(token: &str, algorithm: Algorithm) -> TokenResult<AlgorithmId> {
    match algorithm {
        Algorithm::P256 => Ok(AlgorithmId::EccP256),
        Algorithm::P384 => Ok(AlgorithmId::EccP384),
        Algorithm::Rsa2048 => Ok(AlgorithmId::Rsa2048),
        other => Err(TokenError::Unsupported {
            token: token.to_owned(),
            algorithm: other,
            why: "YubiKey PIV slots hold P-256, P-384 and RSA-2048 keys (use --algorithm p256, p384 or rsa2048)".into(),
        }),
    }
}

impl PivToken {
    /// Opens the YubiKey with `serial`, known to keyward as `name`.
    pub fn open(name: &str, serial: u32) -> TokenResult<Self> {
        // Another program (or another keyward thread: OpenSC's and ykcs11's PKCS#11 modules
        // enumerate the same card) can hold the card for a moment, and then the scan does not
        // see it. Look again for a short while before calling it absent.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let yk = loop {
            match YubiKey::open_by_serial(Serial(serial)) {
                Ok(yk) => break yk,
                Err(yubikey::Error::NotFound | yubikey::Error::PcscError { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(150));
                }
                Err(yubikey::Error::NotFound | yubikey::Error::PcscError { .. }) => {
                    return Err(TokenError::NotPresent {
                        token: format!("{name} (YubiKey serial {serial} not found over PC/SC)"),
                    })
                }
                Err(other) => return Err(map_err(name, "open", other)),
            }
        };
        Ok(PivToken {
            name: name.to_owned(),
            serial,
            inner: Mutex::new(Inner {
                yk,
                pin: None,
                pin_is_default: None,
                options: GenerateOptions::default(),
                notifier: None,
                last_touch_notice: None,
                slots: HashMap::new(),
            }),
        })
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> TokenResult<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| TokenError::Other(format!("{}: session lock poisoned", self.name)))
    }

    fn err(&self, call: &'static str) -> impl Fn(yubikey::Error) -> TokenError + '_ {
        move |e| map_err(&self.name, call, e)
    }

    /// PIN tries left (metadata where the firmware has it, else the VERIFY probe, which logs
    /// the PIN out: re-verify with the kept PIN afterwards).
    fn pin_tries(&self, i: &mut Inner) -> TokenResult<(Option<u32>, Option<bool>)> {
        if let Ok(m) = piv::metadata(&mut i.yk, SlotId::Management(ManagementSlotId::Pin)) {
            return Ok((m.retries.map(|r| r.remaining_count.into()), m.default));
        }
        let tries = match i.yk.get_pin_retries() {
            Ok(n) => n.into(),
            Err(yubikey::Error::PinLocked) => 0,
            Err(e) => return Err(map_err(&self.name, "get PIN retries", e)),
        };
        if let Some(pin) = &i.pin {
            i.yk.verify_pin(pin.expose().as_bytes())
                .map_err(self.err("verify PIN"))?;
        }
        Ok((Some(tries), None))
    }

    /// The management key: PIN-protected on the card (as ykman stores it), else the factory
    /// default. Needs the PIN for the protected case.
    fn authenticate(&self, i: &mut Inner) -> TokenResult<()> {
        let protected =
            i.yk.config()
                .map(|c| c.mgm_type == MgmType::Protected)
                .unwrap_or(false);
        if protected {
            let Some(pin) = &i.pin else {
                return Err(TokenError::NotLoggedIn {
                    token: self.name.clone(),
                });
            };
            i.yk.verify_pin(pin.expose().as_bytes())
                .map_err(self.err("verify PIN"))?;
            let key = MgmKey::get_protected(&mut i.yk)
                .map_err(self.err("read protected management key"))?;
            return i
                .yk
                .authenticate(key)
                .map_err(self.err("authenticate management key"));
        }
        i.yk.authenticate(MgmKey::default()).map_err(|_| {
            TokenError::Other(format!(
                "{}: the management key is neither the factory default nor stored PIN-protected on the card, so keyward cannot authenticate. Store it PIN-protected with `ykman piv access change-management-key --protect` (it asks for the current key), or reset the PIV application with `keyward token piv reset {}`",
                self.name, self.name
            ))
        })
    }

    fn verify_kept_pin(&self, i: &mut Inner) -> TokenResult<()> {
        let Some(pin) = &i.pin else {
            return Err(TokenError::NotLoggedIn {
                token: self.name.clone(),
            });
        };
        match i.yk.verify_pin(pin.expose().as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The PIN changed under us (another program): never try it again.
                i.pin = None;
                Err(map_err(&self.name, "verify PIN", e))
            }
        }
    }

    fn notify(&self, i: &mut Inner, message: &str) {
        if let Some(n) = i.notifier.as_mut() {
            n(message);
        }
    }

    /// What the slot holds, from the card's metadata (firmware 5.3+) or keyward's certificate.
    fn slot_info(&self, i: &mut Inner, slot: u8) -> TokenResult<(SlotInfo, Option<PublicKey>)> {
        let sid = slot_id(slot)?;
        let cert = read_cert(&mut i.yk, slot).ok().flatten();
        if cert.as_ref().is_some_and(is_destroyed_marker) {
            i.slots.remove(&slot);
            return Ok((SlotInfo::default(), None));
        }
        let mut info = i.slots.get(&slot).copied().unwrap_or_default();
        let mut public = None;
        if let Ok(m) = piv::metadata(&mut i.yk, sid) {
            if let Some((p, t)) = m.policy {
                info.pin = match p {
                    PinPolicy::Never => Some(PinPolicyChoice::Never),
                    PinPolicy::Once => Some(PinPolicyChoice::Once),
                    PinPolicy::Always => Some(PinPolicyChoice::Always),
                    PinPolicy::Default => info.pin,
                };
                info.touch = match t {
                    TouchPolicy::Never => Some(TouchPolicyChoice::Never),
                    TouchPolicy::Always => Some(TouchPolicyChoice::Always),
                    TouchPolicy::Cached => Some(TouchPolicyChoice::Cached),
                    TouchPolicy::Default => info.touch,
                };
            }
            if let Some(spki) = m.public {
                if let Ok(der) = spki.to_der() {
                    public = PublicKey::from_spki_der(&der).ok();
                }
            }
        }
        if let Some(cert) = cert {
            if let Some((_, p, t)) = parse_subject(&cert.cert.tbs_certificate.subject) {
                info.pin = info.pin.or(p);
                info.touch = info.touch.or(t);
            }
            if public.is_none() {
                if let Ok(der) = cert.cert.tbs_certificate.subject_public_key_info.to_der() {
                    public = PublicKey::from_spki_der(&der).ok();
                }
            }
        }
        info.algorithm = public.as_ref().map(|p| p.algorithm()).or(info.algorithm);
        i.slots.insert(slot, info);
        Ok((info, public))
    }

    /// Whether a slot holds a key: a certificate, or (firmware 5.3+) the card says so.
    fn slot_used(&self, i: &mut Inner, slot: u8) -> TokenResult<Option<String>> {
        let sid = slot_id(slot)?;
        if let Some(cert) = read_cert(&mut i.yk, slot).map_err(self.err("read certificate"))? {
            if is_destroyed_marker(&cert) {
                return Ok(None);
            }
            return Ok(Some(cert.subject()));
        }
        if piv::metadata(&mut i.yk, sid).is_ok() {
            return Ok(Some("a key without certificate".into()));
        }
        Ok(None)
    }

    /// Writes keyward's self-signed certificate naming the key version into the slot.
    #[allow(clippy::too_many_arguments)] // each is a distinct fact about the new key
    fn write_certificate(
        &self,
        i: &mut Inner,
        slot: u8,
        algorithm: Algorithm,
        label: &str,
        spki: x509_cert::spki::SubjectPublicKeyInfoOwned,
        pin: PinPolicyChoice,
        touch: TouchPolicyChoice,
    ) -> TokenResult<()> {
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::time::Validity;
        let sid = slot_id(slot)?;
        let name = x509_cert::name::Name::from_str(&subject(label, pin, touch))
            .map_err(|e| TokenError::Other(format!("certificate subject for {label:?}: {e}")))?;
        let mut serial = rand::random::<[u8; 16]>();
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        let serial = SerialNumber::new(&serial)
            .map_err(|e| TokenError::Other(format!("certificate serial: {e}")))?;
        // 20 years: the certificate names the key, it is not a trust statement.
        let validity = Validity::from_now(std::time::Duration::from_secs(20 * 365 * 86_400))
            .map_err(|e| TokenError::Other(format!("certificate validity: {e}")))?;
        if touch != TouchPolicyChoice::Never {
            let msg = format!(
                "touch your YubiKey (serial {}) to sign the certificate of {label}",
                self.serial
            );
            self.notify(i, &msg);
        }
        if pin != PinPolicyChoice::Never {
            self.verify_kept_pin(i)?;
        }
        let result = match algorithm {
            Algorithm::P256 => Certificate::generate_self_signed::<_, p256::NistP256>(
                &mut i.yk,
                sid,
                serial,
                validity,
                name,
                spki,
                |_| Ok(()),
            ),
            Algorithm::P384 => Certificate::generate_self_signed::<_, p384::NistP384>(
                &mut i.yk,
                sid,
                serial,
                validity,
                name,
                spki,
                |_| Ok(()),
            ),
            Algorithm::Rsa2048 => {
                Certificate::generate_self_signed::<
                    _,
                    yubikey_signer::YubiRsa<yubikey_signer::Rsa2048>,
                >(&mut i.yk, sid, serial, validity, name, spki, |_| Ok(()))
            }
            other => {
                return Err(TokenError::Other(format!(
                    "no certificate for {other} keys on a YubiKey"
                )))
            }
        };
        result.map_err(|e| self.touch_aware(touch, "write slot certificate", e))?;
        Ok(())
    }

    /// Writes the "destroyed" marker certificate over the throwaway key in `slot`.
    fn write_marker(
        &self,
        i: &mut Inner,
        slot: u8,
        spki: x509_cert::spki::SubjectPublicKeyInfoOwned,
    ) -> Result<(), yubikey::Error> {
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::time::Validity;
        let name = x509_cert::name::Name::from_str(DESTROYED_SUBJECT)
            .map_err(|_| yubikey::Error::InvalidObject)?;
        let serial = SerialNumber::new(&[0x01]).map_err(|_| yubikey::Error::InvalidObject)?;
        let validity = Validity::from_now(std::time::Duration::from_secs(86_400))
            .map_err(|_| yubikey::Error::InvalidObject)?;
        if let Some(pin) = &i.pin {
            // The throwaway key is PIN-always.
            i.yk.verify_pin(pin.expose().as_bytes())?;
        }
        let sid = SlotId::try_from(slot).map_err(|_| yubikey::Error::InvalidObject)?;
        Certificate::generate_self_signed::<_, p256::NistP256>(
            &mut i.yk,
            sid,
            serial,
            validity,
            name,
            spki,
            |_| Ok(()),
        )
        .map(|_| ())
    }

    /// A failed private-key operation where a touch may have been needed: say so.
    fn touch_aware(
        &self,
        touch: TouchPolicyChoice,
        call: &'static str,
        e: yubikey::Error,
    ) -> TokenError {
        match e {
            yubikey::Error::GenericError | yubikey::Error::KeyError
                if touch != TouchPolicyChoice::Never =>
            {
                TokenError::TouchTimeout {
                    token: self.name.clone(),
                }
            }
            other => map_err(&self.name, call, other),
        }
    }

    fn take_options(&self, i: &mut Inner) -> (Option<u8>, PinPolicyChoice, TouchPolicyChoice) {
        let o = std::mem::take(&mut i.options);
        (
            o.slot.as_deref().and_then(|s| parse_slot(s).ok()),
            o.pin_policy.unwrap_or(DEFAULT_PIN_POLICY),
            o.touch_policy.unwrap_or(DEFAULT_TOUCH_POLICY),
        )
    }

    // ---- administration ------------------------------------------------------------------

    /// PIN tries left, without spending one.
    pub fn pin_tries_left(&self) -> TokenResult<Option<u32>> {
        let mut i = self.lock()?;
        Ok(self.pin_tries(&mut i)?.0)
    }

    /// PUK tries left, when the firmware tells (5.3+).
    pub fn puk_tries_left(&self) -> TokenResult<Option<u32>> {
        let mut i = self.lock()?;
        Ok(
            piv::metadata(&mut i.yk, SlotId::Management(ManagementSlotId::Puk))
                .ok()
                .and_then(|m| m.retries.map(|r| r.remaining_count.into())),
        )
    }

    /// Changes the PIN. A wrong current PIN costs a try, like a login.
    pub fn change_pin(&self, current: &Pin, new: &Pin) -> TokenResult<()> {
        check_pin_format("PIN", current.expose(), 6)?;
        check_pin_format("PIN", new.expose(), 6)?;
        let mut i = self.lock()?;
        i.yk.change_pin(current.expose().as_bytes(), new.expose().as_bytes())
            .map_err(self.err("change PIN"))?;
        i.pin = Some(Pin::new(new.expose().to_owned()));
        i.pin_is_default = Some(new.expose() == DEFAULT_PIN);
        // Note the change in the card's admin data (as yubico-piv-tool does), so that firmware
        // without metadata (before 5.3) can still tell the PIN is no longer the default. Best
        // effort: it needs the management key.
        if self.authenticate(&mut i).is_ok() && YubiKey::set_pin_last_changed(&mut i.yk).is_err() {
            // The crate updates existing admin data only; a factory-fresh card has none. Write
            // it (admin tag 80 holding timestamp 83) only when absent, never over flags.
            if i.yk.fetch_object(ADMIN_DATA).is_err() {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as u32)
                    .unwrap_or(1);
                let mut data = vec![0x80, 0x06, 0x83, 0x04];
                data.extend_from_slice(&now.to_le_bytes());
                let _ = i.yk.save_object(ADMIN_DATA, &mut data);
            }
        }
        Ok(())
    }

    /// Changes the PUK. A wrong current PUK costs a PUK try.
    pub fn change_puk(&self, current: &Pin, new: &Pin) -> TokenResult<()> {
        check_pin_format("PUK", current.expose(), 6)?;
        check_pin_format("PUK", new.expose(), 6)?;
        let mut i = self.lock()?;
        i.yk.change_puk(current.expose().as_bytes(), new.expose().as_bytes())
            .map_err(|e| map_puk_err(&self.name, "change PUK", e))
    }

    /// Unblocks (and sets) the PIN with the PUK.
    pub fn unblock_pin(&self, puk: &Pin, new_pin: &Pin) -> TokenResult<()> {
        check_pin_format("PUK", puk.expose(), 6)?;
        check_pin_format("PIN", new_pin.expose(), 6)?;
        let mut i = self.lock()?;
        i.yk.unblock_pin(puk.expose().as_bytes(), new_pin.expose().as_bytes())
            .map_err(|e| map_puk_err(&self.name, "unblock PIN", e))?;
        i.pin = None;
        i.pin_is_default = Some(new_pin.expose() == DEFAULT_PIN);
        Ok(())
    }

    /// Sets the PIN and PUK retry counts. The card then resets PIN and PUK to their factory
    /// defaults (123456, 12345678). Needs a login.
    pub fn set_retries(&self, pin_tries: u8, puk_tries: u8) -> TokenResult<()> {
        if pin_tries == 0 || puk_tries == 0 {
            return Err(TokenError::Other(
                "retry counts are 1 to 255 (the card ignores 0)".into(),
            ));
        }
        let mut i = self.lock()?;
        self.authenticate(&mut i)?;
        self.verify_kept_pin(&mut i)?;
        i.yk.set_pin_retries(pin_tries, puk_tries)
            .map_err(self.err("set PIN retries"))?;
        i.pin = None;
        i.pin_is_default = Some(true);
        Ok(())
    }

    /// Replaces the management key with a new random one stored PIN-protected on the card,
    /// as `ykman piv access change-management-key --generate --protect` does: from then on
    /// the PIN alone unlocks administration. Needs a login.
    pub fn set_protected_management_key(&self) -> TokenResult<()> {
        let mut i = self.lock()?;
        self.authenticate(&mut i)?;
        self.verify_kept_pin(&mut i)?;
        let key = MgmKey::generate();
        key.set_protected(&mut i.yk)
            .map_err(self.err("store PIN-protected management key"))
    }

    /// Resets the PIV application to factory state: blocks the PIN and the PUK (the card
    /// resets only then), then resets. Every key and certificate on the card is lost.
    pub fn reset(&self) -> TokenResult<()> {
        let mut i = self.lock()?;
        for _ in 0..300 {
            // Random 8-byte values: wrong PINs, never the real one in practice.
            let wrong: [u8; 8] = std::array::from_fn(|_| b'0' + rand::random::<u8>() % 10);
            match i.yk.verify_pin(&wrong) {
                Err(yubikey::Error::WrongPin { tries: 0 }) | Err(yubikey::Error::PinLocked) => {
                    break
                }
                Err(yubikey::Error::WrongPin { .. }) => continue,
                Ok(()) => continue,
                Err(e) => return Err(map_err(&self.name, "block PIN", e)),
            }
        }
        i.yk.block_puk().map_err(self.err("block PUK"))?;
        i.yk.reset_device().map_err(self.err("reset"))?;
        i.pin = None;
        i.pin_is_default = Some(true);
        i.slots.clear();
        Ok(())
    }
}

/// What a slot holds, from the card's metadata (firmware 5.3+) and the slot's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    /// The slot in hex (`9c`, `82`).
    pub slot: String,
    pub algorithm: Option<Algorithm>,
    /// `generated` on the card or `imported` (metadata only: firmware 5.3+).
    pub origin: Option<&'static str>,
    pub pin_policy: Option<PinPolicyChoice>,
    pub touch_policy: Option<TouchPolicyChoice>,
    /// keyward key id (SHA-256 of the SPKI) of the slot's public key.
    pub key_id: Option<String>,
    /// The certificate's subject, if the slot has one.
    pub certificate: Option<String>,
    /// The key version keyward's certificate names (`release/3`).
    pub label: Option<String>,
    /// `key` (keyward's or another tool's), `key without certificate` (seen by metadata
    /// only), `certificate only` (no metadata to tell), or `destroyed` (keyward's marker).
    pub status: &'static str,
}

impl PivToken {
    /// Every slot that holds a key or a certificate, for `token piv slots` and the console.
    /// Reads metadata where the firmware answers it (5.3+), so keys without certificates
    /// (another tool's) are found too.
    pub fn slots(&self) -> TokenResult<Vec<SlotStatus>> {
        let mut i = self.lock()?;
        let mut out = Vec::new();
        for slot in key_slots() {
            let sid = slot_id(slot)?;
            let meta = piv::metadata(&mut i.yk, sid).ok();
            let cert = read_cert(&mut i.yk, slot).map_err(self.err("read certificate"))?;
            if meta.is_none() && cert.is_none() {
                continue;
            }
            let marker = cert.as_ref().is_some_and(is_destroyed_marker);
            let mut public = meta
                .as_ref()
                .and_then(|m| m.public.as_ref())
                .and_then(|spki| spki.to_der().ok())
                .and_then(|der| PublicKey::from_spki_der(&der).ok());
            let parsed = cert
                .as_ref()
                .and_then(|c| parse_subject(&c.cert.tbs_certificate.subject));
            if public.is_none() {
                public = cert.as_ref().and_then(|c| {
                    let der = c
                        .cert
                        .tbs_certificate
                        .subject_public_key_info
                        .to_der()
                        .ok()?;
                    PublicKey::from_spki_der(&der).ok()
                });
            }
            let (meta_pin, meta_touch) = match meta.as_ref().and_then(|m| m.policy) {
                Some((p, t)) => (
                    match p {
                        PinPolicy::Never => Some(PinPolicyChoice::Never),
                        PinPolicy::Once => Some(PinPolicyChoice::Once),
                        PinPolicy::Always => Some(PinPolicyChoice::Always),
                        _ => None,
                    },
                    match t {
                        TouchPolicy::Never => Some(TouchPolicyChoice::Never),
                        TouchPolicy::Always => Some(TouchPolicyChoice::Always),
                        TouchPolicy::Cached => Some(TouchPolicyChoice::Cached),
                        _ => None,
                    },
                ),
                None => (None, None),
            };
            let status = match (&meta, &cert) {
                _ if marker => "destroyed",
                (Some(_), Some(_)) => "key",
                (Some(_), None) => "key without certificate",
                (None, _) => "certificate only",
            };
            out.push(SlotStatus {
                slot: slot_hex(slot),
                algorithm: if marker {
                    None
                } else {
                    public.as_ref().map(|p| p.algorithm())
                },
                origin: meta
                    .as_ref()
                    .and_then(|m| m.origin)
                    .filter(|_| !marker)
                    .map(|o| match o {
                        piv::Origin::Generated => "generated",
                        piv::Origin::Imported => "imported",
                    }),
                pin_policy: meta_pin.or(parsed.as_ref().and_then(|p| p.1)),
                touch_policy: meta_touch.or(parsed.as_ref().and_then(|p| p.2)),
                key_id: if marker {
                    None
                } else {
                    public.as_ref().map(|p| p.key_id())
                },
                certificate: cert.as_ref().map(|c| c.subject()),
                label: parsed.filter(|_| !marker).map(|p| p.0),
                status,
            });
        }
        Ok(out)
    }
}

impl Token for PivToken {
    fn info(&self) -> TokenResult<TokenInfo> {
        let mut i = self.lock()?;
        let version = i.yk.version();
        let (tries, pin_default_meta) = self.pin_tries(&mut i)?;
        let puk_meta = piv::metadata(&mut i.yk, SlotId::Management(ManagementSlotId::Puk)).ok();
        let puk_tries = puk_meta
            .as_ref()
            .and_then(|m| m.retries.as_ref().map(|r| u32::from(r.remaining_count)));
        let puk_default = puk_meta.as_ref().and_then(|m| m.default);
        let config = i.yk.config().ok();
        let mgm_default =
            match piv::metadata(&mut i.yk, SlotId::Management(ManagementSlotId::Management)) {
                Ok(m) => m.default,
                // No metadata (firmware < 5.3): the management key has no retry counter, so trying
                // the default costs nothing.
                Err(_) => Some(
                    config.as_ref().map(|c| c.mgm_type) != Some(MgmType::Protected)
                        && i.yk.authenticate(MgmKey::default()).is_ok(),
                ),
            };
        let pin_default = pin_default_meta.or(i.pin_is_default);
        let mut warnings = Vec::new();
        match pin_default {
            Some(true) => warnings.push(format!(
                "the PIN is still the factory default {DEFAULT_PIN}: change it with `keyward token piv change-pin {}`",
                self.name
            )),
            Some(false) => {}
            None => {
                let never_changed = config
                    .as_ref()
                    .map(|c| c.pin_last_changed.is_none())
                    .unwrap_or(true);
                if never_changed && mgm_default == Some(true) {
                    warnings.push(format!(
                        "the PIN is probably still the factory default {DEFAULT_PIN} (no PIN change recorded on the card; firmware {version} cannot say for sure): change it with `keyward token piv change-pin {}`",
                        self.name
                    ));
                }
            }
        }
        if puk_default == Some(true) {
            warnings.push(format!(
                "the PUK is still the factory default {DEFAULT_PUK}: change it with `keyward token piv change-puk {}`",
                self.name
            ));
        }
        if mgm_default == Some(true) {
            warnings.push(format!(
                "the management key is still the factory default: anyone holding the card can replace its keys; run `keyward token piv set-management-key {}`",
                self.name
            ));
        }
        if config.as_ref().is_some_and(|c| c.puk_blocked) || puk_tries == Some(0) {
            warnings
                .push("the PUK is blocked: a locked PIN can only be recovered by a reset".into());
        }
        Ok(TokenInfo {
            kind: TokenKind::Piv,
            label: format!("YubiKey {}", self.serial),
            manufacturer: "Yubico".into(),
            model: format!("YubiKey {} (PIV)", version.major),
            serial: self.serial.to_string(),
            firmware: version.to_string(),
            pin: PinStatus {
                tries_left: tries,
                count_low: false,
                final_try: tries == Some(1),
                locked: tries == Some(0),
                not_initialized: false,
            },
            hardware: true,
            algorithms: vec![Algorithm::P256, Algorithm::P384, Algorithm::Rsa2048],
            puk_tries_left: puk_tries,
            warnings,
        })
    }

    fn login(&mut self, pin: &Pin) -> TokenResult<()> {
        check_pin_format("PIN", pin.expose(), 6)?;
        let name = self.name.clone();
        let mut i = self.lock()?;
        i.yk.verify_pin(pin.expose().as_bytes())
            .map_err(|e| map_err(&name, "verify PIN", e))?;
        // Kept (zeroized on drop) to re-verify before each PIN-always operation: one PIN
        // entry for a batch.
        i.pin = Some(Pin::new(pin.expose().to_owned()));
        i.pin_is_default = Some(pin.expose() == DEFAULT_PIN);
        Ok(())
    }

    fn is_logged_in(&self) -> bool {
        self.inner.lock().map(|i| i.pin.is_some()).unwrap_or(false)
    }

    fn list_keys(&mut self) -> TokenResult<Vec<TokenKey>> {
        let mut i = self.lock()?;
        let mut keys = Vec::new();
        for slot in key_slots() {
            let cert = match read_cert(&mut i.yk, slot) {
                Ok(Some(c)) if !is_destroyed_marker(&c) => c,
                Ok(_) => continue,
                Err(e) => return Err(map_err(&self.name, "read certificate", e)),
            };
            let Ok(der) = cert.cert.tbs_certificate.subject_public_key_info.to_der() else {
                continue;
            };
            // A key keyward cannot use (RSA-1024, X25519...) is not one of ours.
            let Ok(public_key) = PublicKey::from_spki_der(&der) else {
                continue;
            };
            let parsed = parse_subject(&cert.cert.tbs_certificate.subject);
            let label = match &parsed {
                Some((cn, _, _)) => cn.clone(),
                None => cert.subject(),
            };
            if let Some((_, pin, touch)) = parsed {
                i.slots.insert(
                    slot,
                    SlotInfo {
                        algorithm: Some(public_key.algorithm()),
                        pin,
                        touch,
                    },
                );
            }
            keys.push(TokenKey {
                object_id: ObjectId(slot_hex(slot)),
                label,
                algorithm: public_key.algorithm(),
                public_key,
                has_private: true,
            });
        }
        Ok(keys)
    }

    fn new_object_id(&mut self, taken: &[ObjectId]) -> TokenResult<ObjectId> {
        let mut i = self.lock()?;
        let taken: Vec<u8> = taken.iter().filter_map(|o| parse_slot(&o.0).ok()).collect();
        if let Some(s) = i.options.slot.clone() {
            let slot = parse_slot(&s)?;
            if taken.contains(&slot) {
                return Err(TokenError::Other(format!(
                    "slot {} of {} holds a key version keyward still tracks; destroy it first (`keyward key destroy`) or choose another --slot",
                    slot_hex(slot),
                    self.name
                )));
            }
            if let Some(what) = self.slot_used(&mut i, slot)? {
                return Err(TokenError::Other(format!(
                    "slot {} of {} is not empty ({what}); keyward does not overwrite a key. Choose another --slot, or free it with ykman",
                    slot_hex(slot),
                    self.name
                )));
            }
            return Ok(ObjectId(slot_hex(slot)));
        }
        for slot in automatic_slots() {
            if taken.contains(&slot) {
                continue;
            }
            if self.slot_used(&mut i, slot)?.is_none() {
                return Ok(ObjectId(slot_hex(slot)));
            }
        }
        Err(TokenError::Other(format!(
            "{}: slot 9c and all 20 retired slots (82..95) hold keys; destroy a key version or name a slot with --slot",
            self.name
        )))
    }

    fn set_generate_options(&mut self, options: &GenerateOptions) -> TokenResult<()> {
        if let Some(s) = &options.slot {
            parse_slot(s)?;
        }
        self.lock()?.options = options.clone();
        Ok(())
    }

    fn set_notifier(&mut self, notifier: Notifier) {
        if let Ok(mut i) = self.inner.lock() {
            i.notifier = Some(notifier);
        }
    }

    fn generate(&mut self, request: &GenerateRequest) -> TokenResult<TokenKey> {
        let name = self.name.clone();
        let mut i = self.lock()?;
        if i.pin.is_none() {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        let slot = parse_slot(&request.object_id.0)?;
        let alg = piv_algorithm(&name, request.algorithm)?;
        let (_, pin, touch) = self.take_options(&mut i);
        self.authenticate(&mut i)?;
        let spki = piv::generate(
            &mut i.yk,
            slot_id(slot)?,
            alg,
            pin.to_yubikey(),
            touch.to_yubikey(),
        )
        .map_err(|e| map_err(&name, "generate", e))?;
        let der = spki
            .to_der()
            .map_err(|e| TokenError::Other(format!("{name}: public key: {e}")))?;
        let public_key = PublicKey::from_spki_der(&der)?;
        i.slots.insert(
            slot,
            SlotInfo {
                algorithm: Some(public_key.algorithm()),
                pin: Some(pin),
                touch: Some(touch),
            },
        );
        self.write_certificate(
            &mut i,
            slot,
            request.algorithm,
            &request.label,
            spki,
            pin,
            touch,
        )?;
        Ok(TokenKey {
            object_id: ObjectId(slot_hex(slot)),
            label: request.label.clone(),
            algorithm: public_key.algorithm(),
            public_key,
            has_private: true,
        })
    }

    fn import_key(&mut self, request: &GenerateRequest, pkcs8: &[u8]) -> TokenResult<TokenKey> {
        use p256::pkcs8::DecodePrivateKey;
        use spki::EncodePublicKey;
        let name = self.name.clone();
        let mut i = self.lock()?;
        if i.pin.is_none() {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        let slot = parse_slot(&request.object_id.0)?;
        let sid = slot_id(slot)?;
        let alg = piv_algorithm(&name, request.algorithm)?;
        let (_, pin, touch) = self.take_options(&mut i);
        let bad = |e: String| {
            TokenError::Other(format!("invalid {} private key: {e}", request.algorithm))
        };
        self.authenticate(&mut i)?;
        let spki_der = match request.algorithm {
            Algorithm::P256 => {
                let k = p256::SecretKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
                let scalar = zeroize::Zeroizing::new(k.to_bytes().to_vec());
                piv::import_ecc_key(
                    &mut i.yk,
                    sid,
                    alg,
                    &scalar,
                    touch.to_yubikey(),
                    pin.to_yubikey(),
                )
                .map_err(|e| map_err(&name, "import", e))?;
                k.public_key().to_public_key_der()
            }
            Algorithm::P384 => {
                let k = p384::SecretKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
                let scalar = zeroize::Zeroizing::new(k.to_bytes().to_vec());
                piv::import_ecc_key(
                    &mut i.yk,
                    sid,
                    alg,
                    &scalar,
                    touch.to_yubikey(),
                    pin.to_yubikey(),
                )
                .map_err(|e| map_err(&name, "import", e))?;
                k.public_key().to_public_key_der()
            }
            Algorithm::Rsa2048 => {
                use rsa::traits::{PrivateKeyParts, PublicKeyParts};
                let k =
                    rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
                if k.e() != &rsa::BigUint::from(65_537u32) || k.primes().len() != 2 {
                    return Err(bad(
                        "a YubiKey imports two-prime RSA keys with public exponent 65537 only"
                            .into(),
                    ));
                }
                let p = zeroize::Zeroizing::new(k.primes()[0].to_bytes_be());
                let q = zeroize::Zeroizing::new(k.primes()[1].to_bytes_be());
                let data = piv::RsaKeyData::new(&p, &q).map_err(|e| map_err(&name, "import", e))?;
                piv::import_rsa_key(
                    &mut i.yk,
                    sid,
                    alg,
                    data,
                    touch.to_yubikey(),
                    pin.to_yubikey(),
                )
                .map_err(|e| map_err(&name, "import", e))?;
                k.to_public_key().to_public_key_der()
            }
            other => {
                return Err(piv_algorithm(&name, other)
                    .err()
                    .unwrap_or_else(|| bad("unsupported".into())))
            }
        }
        .map_err(|e| bad(e.to_string()))?;
        let public_key = PublicKey::from_spki_der(spki_der.as_bytes())?;
        let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        i.slots.insert(
            slot,
            SlotInfo {
                algorithm: Some(public_key.algorithm()),
                pin: Some(pin),
                touch: Some(touch),
            },
        );
        self.write_certificate(
            &mut i,
            slot,
            request.algorithm,
            &request.label,
            spki,
            pin,
            touch,
        )?;
        Ok(TokenKey {
            object_id: ObjectId(slot_hex(slot)),
            label: request.label.clone(),
            algorithm: public_key.algorithm(),
            public_key,
            has_private: true,
        })
    }

    fn sign(&mut self, object_id: &ObjectId, data: &[u8]) -> TokenResult<Vec<u8>> {
        let name = self.name.clone();
        let slot = parse_slot(&object_id.0)?;
        let mut i = self.lock()?;
        if i.pin.is_none() {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        let info = match i.slots.get(&slot).copied() {
            Some(s) if s.algorithm.is_some() => s,
            _ => self.slot_info(&mut i, slot)?.0,
        };
        let Some(algorithm) = info.algorithm else {
            return Err(TokenError::KeyNotFound {
                token: name,
                object_id: object_id.0.clone(),
            });
        };
        let (input, alg) = sign_input(algorithm, data)?;
        let touch = info.touch.unwrap_or(TouchPolicyChoice::Cached);
        let mut attempt = 0;
        let raw = loop {
            attempt += 1;
            if info.pin != Some(PinPolicyChoice::Once) && info.pin != Some(PinPolicyChoice::Never) {
                self.verify_kept_pin(&mut i)?;
            }
            // A cached touch covers 15 s: say it again only when the cache may have expired.
            let fresh = i
                .last_touch_notice
                .is_some_and(|t| t.elapsed().as_secs() < 14);
            if touch == TouchPolicyChoice::Always || (touch == TouchPolicyChoice::Cached && !fresh)
            {
                let msg = format!(
                    "touch your YubiKey (serial {}) if it blinks; keyward waits about 15 s",
                    self.serial
                );
                self.notify(&mut i, &msg);
                i.last_touch_notice = Some(std::time::Instant::now());
            }
            match piv::sign_data(&mut i.yk, &input, alg, slot_id(slot)?) {
                Ok(sig) => break sig,
                // Another program reset the card (which logs the PIN out): reconnect once.
                Err(yubikey::Error::PcscError {
                    inner: Some(pcsc::Error::ResetCard),
                }) if attempt == 1 => {
                    i.yk.reconnect()
                        .map_err(|e| map_err(&name, "reconnect", e))?;
                    continue;
                }
                Err(e) => return Err(self.touch_aware(touch, "sign", e)),
            }
        };
        match algorithm {
            Algorithm::P256 | Algorithm::P384 => {
                // The card answers DER; accept raw r||s too.
                let der = if raw.first() == Some(&0x30) {
                    raw.to_vec()
                } else {
                    super::pubkey::ecdsa_raw_to_der(algorithm, &raw)?
                };
                Ok(der)
            }
            _ => Ok(raw.to_vec()),
        }
    }

    fn public_key(&mut self, object_id: &ObjectId) -> TokenResult<PublicKey> {
        let slot = parse_slot(&object_id.0)?;
        let mut i = self.lock()?;
        self.slot_info(&mut i, slot)?
            .1
            .ok_or_else(|| TokenError::KeyNotFound {
                token: self.name.clone(),
                object_id: object_id.0.clone(),
            })
    }

    fn destroy(&mut self, object_id: &ObjectId) -> TokenResult<()> {
        let name = self.name.clone();
        let slot = parse_slot(&object_id.0)?;
        let sid = slot_id(slot)?;
        let mut i = self.lock()?;
        if i.pin.is_none() {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        if self.slot_used(&mut i, slot)?.is_none() {
            return Err(TokenError::KeyNotFound {
                token: name,
                object_id: object_id.0.clone(),
            });
        }
        self.authenticate(&mut i)?;
        // Before firmware 5.7 a PIV key cannot be deleted, only replaced: overwrite it with a
        // throwaway key (never exported, never used for anything but its marker certificate),
        // and replace the certificate with keyward's "destroyed" marker, so that the slot
        // reads as free even where the card's metadata still reports a key.
        let spki = piv::generate(
            &mut i.yk,
            sid,
            AlgorithmId::EccP256,
            PinPolicy::Always,
            TouchPolicy::Never,
        )
        .map_err(|e| map_err(&name, "overwrite key", e))?;
        i.slots.remove(&slot);
        self.write_marker(&mut i, slot, spki)
            .map_err(|e| map_err(&name, "write destroyed-slot certificate", e))?;
        Ok(())
    }

    fn attest(&mut self, object_id: &ObjectId, extra_roots: &[Anchor]) -> TokenResult<Attestation> {
        let name = self.name.clone();
        let slot = parse_slot(&object_id.0)?;
        let sid = slot_id(slot)?;
        let mut i = self.lock()?;
        let (_, public) = self.slot_info(&mut i, slot)?;
        let public = public.ok_or_else(|| TokenError::KeyNotFound {
            token: name.clone(),
            object_id: object_id.0.clone(),
        })?;
        let leaf = piv::attest(&mut i.yk, sid).map_err(|e| match e {
            yubikey::Error::NotSupported | yubikey::Error::GenericError => TokenError::Other(format!(
                "{name}: the card refused to attest slot {} (YubiKeys attest keys generated on the card, firmware 4.3 or later; imported keys cannot be attested)",
                slot_hex(slot)
            )),
            other => map_err(&name, "attest", other),
        })?;
        let intermediate = read_cert(&mut i.yk, 0xf9)
            .map_err(|e| map_err(&name, "read attestation certificate (f9)", e))?
            .ok_or_else(|| {
                TokenError::Other(format!(
                    "{name}: the card has no attestation certificate (f9)"
                ))
            })?
            .cert
            .to_der()
            .map_err(|e| TokenError::Other(format!("{name}: f9 certificate: {e}")))?;
        Ok(attest::verify_chain(
            &leaf,
            &intermediate,
            Some(self.serial),
            Some(&public),
            extra_roots,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_parse_and_order() {
        assert_eq!(parse_slot("9c").unwrap(), 0x9c);
        assert_eq!(parse_slot("0x82").unwrap(), 0x82);
        assert_eq!(parse_slot("95").unwrap(), 0x95);
        assert!(parse_slot("96").is_err());
        assert!(
            parse_slot("f9").is_err(),
            "the attestation slot holds no user key"
        );
        let auto = automatic_slots();
        assert_eq!(auto.len(), 21);
        assert_eq!(auto[0], 0x9c);
        assert_eq!(auto[1], 0x82);
    }

    #[test]
    fn token_names() {
        assert_eq!(parse_token_name("yubikey:12345678"), Some(Ok(12_345_678)));
        assert!(parse_token_name("yubikey:abc").unwrap().is_err());
        assert_eq!(parse_token_name("hsm"), None);
    }

    #[test]
    fn subject_round_trips() {
        let s = subject(
            "release/3",
            PinPolicyChoice::Always,
            TouchPolicyChoice::Cached,
        );
        let name = x509_cert::name::Name::from_str(&s).unwrap();
        let (label, pin, touch) = parse_subject(&name).unwrap();
        assert_eq!(label, "release/3");
        assert_eq!(pin, Some(PinPolicyChoice::Always));
        assert_eq!(touch, Some(TouchPolicyChoice::Cached));
        let foreign = x509_cert::name::Name::from_str("CN=SSH key").unwrap();
        assert!(parse_subject(&foreign).is_none());
    }

    #[test]
    fn rsa_block_is_the_pkcs1v15_encoding() {
        use rsa::traits::PublicKeyParts;
        use signature::{SignatureEncoding, Signer};
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let block = pkcs1_sha256_block(b"data", key.size()).unwrap();
        // A standard PKCS#1 v1.5 SHA-256 signature, opened with the public key, is the block
        // the card is given to sign raw.
        let sig = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone()).sign(b"data");
        let opened = rsa::BigUint::from_bytes_be(&sig.to_vec()).modpow(key.e(), key.n());
        let mut em = opened.to_bytes_be();
        em.insert(0, 0);
        assert_eq!(em, block);
        let pk = PublicKey::from_spki_der(
            spki::EncodePublicKey::to_public_key_der(&key.to_public_key())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(pk.algorithm(), Algorithm::Rsa2048);
    }

    #[test]
    fn p384_input_keeps_the_sha256_value() {
        let (input, _) = sign_input(Algorithm::P384, b"x").unwrap();
        assert_eq!(input.len(), 48);
        assert!(input[..16].iter().all(|b| *b == 0));
        assert_eq!(input[16..], Sha256::digest(b"x")[..]);
    }

    #[test]
    fn apdu_trace_logging_is_compiled_out() {
        // The yubikey crate trace-logs whole APDUs, PIN verification included.
        assert!(log::STATIC_MAX_LEVEL <= log::LevelFilter::Info);
    }

    #[test]
    fn pin_format_is_checked_before_the_card() {
        assert!(check_pin_format("PIN", "12345", 6).is_err());
        assert!(check_pin_format("PIN", "123456789", 6).is_err());
        assert!(check_pin_format("PIN", "123456", 6).is_ok());
    }
}
