//! What a YubiKey 5 has and piv-authenticator lacks, added by the glue (README: "What the
//! glue adds"): GET METADATA (F7), ATTEST (F9) with a test CA, and import of P-256/P-384 keys
//! into any slot (FE), signed with by the glue itself (87).
//!
//! The glue learns each slot's key from the GENERATE answers and from its own imports, and
//! whether the PIN, PUK and management key are the factory defaults from the commands that
//! change them: it compares the new values with the defaults and keeps only the answer.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rand_chacha::rand_core::{CryptoRng, RngCore};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::der::asn1::{Any, BitString, OctetString};
use x509_cert::der::oid::{AssociatedOid as _, ObjectIdentifier};
use x509_cert::der::pem::LineEnding;
use x509_cert::der::{Decode as _, DecodePem as _, Encode as _, EncodePem as _};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;
use zeroize::Zeroizing;

pub const ALG_RSA2048: u8 = 0x07;
pub const ALG_P256: u8 = 0x11;
pub const ALG_P384: u8 = 0x14;
const ALG_3DES: u8 = 0x03;
const ORIGIN_GENERATED: u8 = 1;
const ORIGIN_IMPORTED: u8 = 2;
const PIN_NEVER: u8 = 1;
const PIN_ONCE: u8 = 2;
const PIN_ALWAYS: u8 = 3;
const TOUCH_NEVER: u8 = 1;
/// piv-authenticator's PIN retry limit.
pub const PIN_RETRIES: u8 = 3;
const DEFAULT_PIN: &[u8] = b"123456";
const DEFAULT_PUK: &[u8] = b"12345678";
const DEFAULT_MGM: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
// Yubico's PIV attestation extensions: firmware, serial, PIN/touch policy, form factor.
const OID_FIRMWARE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.3");
const OID_SERIAL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.7");
const OID_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.8");
const OID_FORM_FACTOR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.9");
/// Form factor reported in attestations: USB-A keychain.
const FORM_FACTOR: u8 = 0x01;

/// A key the glue knows in a slot.
#[derive(Clone)]
pub struct SlotKey {
    pub alg: u8,
    pub pin: u8,
    pub touch: u8,
    origin: u8,
    /// As GET METADATA tag 04 carries it: `86 L point` (EC) or `81 L n 82 L e` (RSA).
    public: Vec<u8>,
    /// The private scalar of an EC key imported through the glue, which signs with it.
    scalar: Option<Zeroizing<Vec<u8>>>,
}

impl SlotKey {
    pub fn pin_policy(&self) -> u8 {
        self.pin
    }
    pub fn held_by_glue(&self) -> bool {
        self.scalar.is_some()
    }
}

/// The YubiKey defaults for a slot's PIN policy (9c always, 9e never, others once).
fn resolve_pin(slot: u8, policy: Option<u8>) -> u8 {
    match policy {
        Some(p @ 1..=3) => p,
        _ => match slot {
            0x9c => PIN_ALWAYS,
            0x9e => PIN_NEVER,
            _ => PIN_ONCE,
        },
    }
}

fn resolve_touch(policy: Option<u8>) -> u8 {
    match policy {
        Some(t @ 1..=3) => t,
        _ => TOUCH_NEVER,
    }
}

/// What the glue keeps about keys and credentials (persisted in `keys` of the state dir).
pub struct Keys {
    pub slots: BTreeMap<u8, SlotKey>,
    pub pin_default: bool,
    pub puk_default: bool,
    mgm_default: bool,
    mgm_alg: u8,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            slots: BTreeMap::new(),
            pin_default: true,
            puk_default: true,
            mgm_default: true,
            mgm_alg: ALG_3DES,
        }
    }
}

impl Keys {
    pub fn load(path: &Path) -> io::Result<Self> {
        let mut keys = Keys::default();
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(e),
        };
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("{}", path.display()));
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["flags", pin, puk, mgm, alg] => {
                    keys.pin_default = *pin == "1";
                    keys.puk_default = *puk == "1";
                    keys.mgm_default = *mgm == "1";
                    keys.mgm_alg = u8::from_str_radix(alg, 16).map_err(|_| bad())?;
                }
                ["slot", slot, alg, pin, touch, origin, public, rest @ ..] => {
                    let byte = |s: &str| u8::from_str_radix(s, 16).map_err(|_| bad());
                    let scalar = match rest {
                        [s] => Some(Zeroizing::new(unhex(s).ok_or_else(bad)?)),
                        _ => None,
                    };
                    keys.slots.insert(
                        byte(slot)?,
                        SlotKey {
                            alg: byte(alg)?,
                            pin: byte(pin)?,
                            touch: byte(touch)?,
                            origin: byte(origin)?,
                            public: unhex(public).ok_or_else(bad)?,
                            scalar,
                        },
                    );
                }
                _ => return Err(bad()),
            }
        }
        Ok(keys)
    }

    /// The file holds the imported scalars: a test tool's state, like piv-authenticator's.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let b = |v: bool| if v { "1" } else { "0" };
        let mut out = format!(
            "flags {} {} {} {:02x}\n",
            b(self.pin_default),
            b(self.puk_default),
            b(self.mgm_default),
            self.mgm_alg
        );
        for (slot, k) in &self.slots {
            out.push_str(&format!(
                "slot {slot:02x} {:02x} {:02x} {:02x} {:02x} {}",
                k.alg,
                k.pin,
                k.touch,
                k.origin,
                hex(&k.public)
            ));
            if let Some(s) = &k.scalar {
                out.push(' ');
                out.push_str(&hex(s));
            }
            out.push('\n');
        }
        fs::write(path, out)
    }

    /// GENERATE answered `response` (7F49 ...) to `request` (AC: 80 alg, AA pin, AB touch).
    pub fn generated(&mut self, slot: u8, request: &[u8], response: &[u8]) {
        let Some((0x7F49, public, _)) = take_tlv2(response) else {
            return;
        };
        let Some((0xAC, template, _)) = take_tlv2(request) else {
            return;
        };
        let (mut alg, mut pin, mut touch) = (None, None, None);
        let mut rest = template;
        while let Some((tag, value, tail)) = take_tlv2(rest) {
            match (tag, value) {
                (0x80, [a]) => alg = Some(*a),
                (0xAA, [p]) => pin = Some(*p),
                (0xAB, [t]) => touch = Some(*t),
                _ => {}
            }
            rest = tail;
        }
        let Some(alg) = alg else { return };
        self.slots.insert(
            slot,
            SlotKey {
                alg,
                pin: resolve_pin(slot, pin),
                touch: resolve_touch(touch),
                origin: ORIGIN_GENERATED,
                public: public.to_vec(),
                scalar: None,
            },
        );
    }

    /// IMPORT of an EC key (Yubico's format: 06 scalar, AA pin, AB touch): checked and kept.
    pub fn import_ec(&mut self, alg: u8, slot: u8, data: &[u8]) -> Result<(), u16> {
        let (mut scalar, mut pin, mut touch) = (None, None, None);
        let mut rest = data;
        while !rest.is_empty() {
            let (tag, value, tail) = take_tlv2(rest).ok_or(SW_WRONG_DATA)?;
            match (tag, value) {
                (0x06, s) => scalar = Some(s),
                (0xAA, [p]) => pin = Some(*p),
                (0xAB, [t]) => touch = Some(*t),
                _ => return Err(SW_WRONG_DATA),
            }
            rest = tail;
        }
        let scalar = scalar.ok_or(SW_WRONG_DATA)?;
        let point = match alg {
            ALG_P256 => p256::SecretKey::from_slice(scalar)
                .map_err(|_| SW_WRONG_DATA)?
                .public_key()
                .to_sec1_bytes()
                .to_vec(),
            ALG_P384 => p384::SecretKey::from_slice(scalar)
                .map_err(|_| SW_WRONG_DATA)?
                .public_key()
                .to_sec1_bytes()
                .to_vec(),
            _ => return Err(SW_WRONG_DATA),
        };
        let mut public = Vec::new();
        put_tlv(&mut public, 0x86, &point);
        self.slots.insert(
            slot,
            SlotKey {
                alg,
                pin: resolve_pin(slot, pin),
                touch: resolve_touch(touch),
                origin: ORIGIN_IMPORTED,
                public,
                scalar: Some(Zeroizing::new(scalar.to_vec())),
            },
        );
        Ok(())
    }

    /// An RSA import piv-authenticator accepted: the public key is p*q and 65537.
    pub fn imported_rsa(&mut self, slot: u8, p: &[u8], q: &[u8], e: &[u8], data: &[u8]) {
        let n =
            num_bigint_dig::BigUint::from_bytes_be(p) * num_bigint_dig::BigUint::from_bytes_be(q);
        let mut public = Vec::new();
        put_tlv(&mut public, 0x81, &n.to_bytes_be());
        put_tlv(&mut public, 0x82, e);
        let policy = |tag| {
            let mut rest = data;
            while let Some((t, v, tail)) = take_tlv2(rest) {
                if t == tag && v.len() == 1 {
                    return Some(v[0]);
                }
                rest = tail;
            }
            None
        };
        self.slots.insert(
            slot,
            SlotKey {
                alg: ALG_RSA2048,
                pin: resolve_pin(slot, policy(0xAA)),
                touch: resolve_touch(policy(0xAB)),
                origin: ORIGIN_IMPORTED,
                public,
                scalar: None,
            },
        );
    }

    /// Signs `input` (7C { 82 00, 81 digest }) with a glue-held key; answers 7C { 82 sig }.
    pub fn sign(&self, alg: u8, slot: u8, data: &[u8]) -> Result<Vec<u8>, u16> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let key = self.slots.get(&slot).ok_or(SW_NOT_FOUND)?;
        let scalar = key.scalar.as_ref().ok_or(SW_NOT_FOUND)?;
        if alg != key.alg {
            return Err(SW_WRONG_DATA);
        }
        let (0x7C, template, _) = take_tlv2(data).ok_or(SW_WRONG_DATA)? else {
            return Err(SW_WRONG_DATA);
        };
        let mut digest = None;
        let mut rest = template;
        while let Some((tag, value, tail)) = take_tlv2(rest) {
            match tag {
                0x81 => digest = Some(value),
                0x82 if value.is_empty() => {}
                _ => return Err(SW_WRONG_DATA), // only signing (no ECDH, no management auth)
            }
            rest = tail;
        }
        let digest = digest.ok_or(SW_WRONG_DATA)?;
        let signature = match alg {
            ALG_P256 => {
                let k = p256::ecdsa::SigningKey::from_slice(scalar).map_err(|_| SW_WRONG_DATA)?;
                let s: p256::ecdsa::Signature =
                    k.sign_prehash(digest).map_err(|_| SW_WRONG_DATA)?;
                s.to_der().as_bytes().to_vec()
            }
            ALG_P384 => {
                let k = p384::ecdsa::SigningKey::from_slice(scalar).map_err(|_| SW_WRONG_DATA)?;
                let s: p384::ecdsa::Signature =
                    k.sign_prehash(digest).map_err(|_| SW_WRONG_DATA)?;
                s.to_der().as_bytes().to_vec()
            }
            _ => return Err(SW_WRONG_DATA),
        };
        let mut inner = Vec::new();
        put_tlv(&mut inner, 0x82, &signature);
        let mut out = Vec::new();
        put_tlv(&mut out, 0x7C, &inner);
        Ok(out)
    }

    pub fn mgm_set(&mut self, data: &[u8]) {
        if let [alg, 0x9B, _len, key @ ..] = data {
            self.mgm_alg = *alg;
            self.mgm_default = *alg == ALG_3DES && key == DEFAULT_MGM;
        }
    }

    /// CHANGE REFERENCE / RESET RETRY COUNTER data: two 8-byte values padded with FF.
    pub fn new_value_is(data: &[u8], default: &[u8]) -> bool {
        let new = data.get(8..16).unwrap_or_default();
        let end = new.iter().position(|b| *b == 0xFF).unwrap_or(new.len());
        &new[..end] == default
    }

    pub fn pin_changed(&mut self, data: &[u8]) {
        self.pin_default = Self::new_value_is(data, DEFAULT_PIN);
    }

    pub fn puk_changed(&mut self, data: &[u8]) {
        self.puk_default = Self::new_value_is(data, DEFAULT_PUK);
    }

    /// GET METADATA for a key slot or the management key; PIN and PUK are answered by the
    /// caller, which knows the retry counters.
    pub fn metadata(&self, slot: u8, attestor: Option<&Attestor>) -> Result<Vec<u8>, u16> {
        let mut out = Vec::new();
        match slot {
            0x9B => {
                put_tlv(&mut out, 0x01, &[self.mgm_alg]);
                put_tlv(&mut out, 0x02, &[0x00, TOUCH_NEVER]);
                put_tlv(&mut out, 0x05, &[u8::from(self.mgm_default)]);
            }
            0xF9 => {
                let a = attestor.ok_or(SW_NOT_FOUND_DATA)?;
                let point = a.key.verifying_key().to_encoded_point(false);
                let mut public = Vec::new();
                put_tlv(&mut public, 0x86, point.as_bytes());
                put_tlv(&mut out, 0x01, &[ALG_P256]);
                put_tlv(&mut out, 0x02, &[PIN_NEVER, TOUCH_NEVER]);
                put_tlv(&mut out, 0x03, &[ORIGIN_IMPORTED]);
                put_tlv(&mut out, 0x04, &public);
            }
            _ => {
                let k = self.slots.get(&slot).ok_or(SW_NOT_FOUND_DATA)?;
                put_tlv(&mut out, 0x01, &[k.alg]);
                put_tlv(&mut out, 0x02, &[k.pin, k.touch]);
                put_tlv(&mut out, 0x03, &[k.origin]);
                put_tlv(&mut out, 0x04, &k.public);
            }
        }
        Ok(out)
    }
}

pub fn pin_metadata(default: bool, total: u8, left: u8) -> Vec<u8> {
    let mut out = Vec::new();
    put_tlv(&mut out, 0x01, &[0xFF]);
    put_tlv(&mut out, 0x05, &[u8::from(default)]);
    put_tlv(&mut out, 0x06, &[total, left]);
    out
}

const SW_WRONG_DATA: u16 = 0x6A80;
const SW_NOT_FOUND: u16 = 0x6A82;
const SW_NOT_FOUND_DATA: u16 = 0x6A88;

// ---- attestation ---------------------------------------------------------------------------

/// File names in an `--attestation-ca` directory.
pub const ROOT_CERT: &str = "root-ca.pem";
const ROOT_KEY: &str = "root-ca.key";

/// The test root CA: read from `dir`, else created there (the key 0600); without a
/// directory, a root that lives as long as the process.
pub fn root_ca(
    dir: Option<&Path>,
    rng: &mut (impl RngCore + CryptoRng),
) -> io::Result<(p256::ecdsa::SigningKey, Certificate)> {
    let key = p256::ecdsa::SigningKey::random(rng);
    let mut tag = [0u8; 4];
    rng.fill_bytes(&mut tag);
    let name = name(&format!(
        "CN=keyward virtual-piv test attestation root {},O=NOT A YUBICO CA",
        hex(&tag)
    ))?;
    let Some(dir) = dir else {
        let cert = issue(
            rng,
            &key,
            &name,
            &name,
            spki_of(&key)?,
            ca_extensions()?,
            None,
        )?;
        return Ok((key, cert));
    };
    let (cert_path, key_path) = (dir.join(ROOT_CERT), dir.join(ROOT_KEY));
    let load = || -> io::Result<(p256::ecdsa::SigningKey, Certificate)> {
        let k = p256::SecretKey::from_pkcs8_pem(&fs::read_to_string(&key_path)?)
            .map_err(|e| invalid(&key_path, e))?;
        let c = Certificate::from_pem(fs::read(&cert_path)?).map_err(|e| invalid(&cert_path, e))?;
        Ok((k.into(), c))
    };
    if cert_path.exists() {
        return load();
    }
    fs::create_dir_all(dir)?;
    let pem = p256::SecretKey::from(&key)
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| invalid(&key_path, e))?;
    match write_new(&key_path, pem.as_bytes(), 0o600) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Another card is creating the CA right now: use it once complete.
            for _ in 0..50 {
                if cert_path.exists() {
                    return load();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    let cert = issue(
        rng,
        &key,
        &name,
        &name,
        spki_of(&key)?,
        ca_extensions()?,
        None,
    )?;
    let cert_pem = cert
        .to_pem(LineEnding::LF)
        .map_err(|e| invalid(&cert_path, e))?;
    let tmp = dir.join(format!("{ROOT_CERT}.tmp"));
    fs::write(&tmp, cert_pem.as_bytes())?;
    fs::rename(&tmp, &cert_path)?;
    Ok((key, cert))
}

/// The card's attestation key (slot f9) and its certificate, which the root signed.
pub struct Attestor {
    key: p256::ecdsa::SigningKey,
    pub cert: Certificate,
}

impl Attestor {
    /// Loads the card's attestation key from `state_dir` when it is there and was issued by
    /// `root`; else makes a new one (kept in `state_dir` when given).
    pub fn new(
        serial: u32,
        root: &(p256::ecdsa::SigningKey, Certificate),
        state_dir: Option<&Path>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> io::Result<Self> {
        let root_name = &root.1.tbs_certificate.subject;
        if let Some(dir) = state_dir {
            let (kp, cp) = (dir.join("f9.key"), dir.join("f9.der"));
            if let (Ok(k), Ok(c)) = (fs::read(&kp), fs::read(&cp)) {
                let key = p256::ecdsa::SigningKey::from_slice(&k).map_err(|e| invalid(&kp, e))?;
                let cert = Certificate::from_der(&c).map_err(|e| invalid(&cp, e))?;
                if &cert.tbs_certificate.issuer == root_name {
                    return Ok(Self { key, cert });
                }
            }
        }
        let key = p256::ecdsa::SigningKey::random(rng);
        let subject = name(&format!("CN=Virtual PIV Attestation {serial}"))?;
        let cert = issue(
            rng,
            &root.0,
            root_name,
            &subject,
            spki_of(&key)?,
            ca_extensions()?,
            None,
        )?;
        if let Some(dir) = state_dir {
            fs::write(dir.join("f9.key"), &key.to_bytes()[..])?;
            fs::write(
                dir.join("f9.der"),
                cert.to_der().map_err(|e| invalid(dir, e))?,
            )?;
        }
        Ok(Self { key, cert })
    }

    /// The f9 certificate as object 5FFF01 holds it: 53 { 70 cert, 71 00, FE 00 }.
    pub fn object(&self) -> Vec<u8> {
        let mut inner = Vec::new();
        put_tlv(&mut inner, 0x70, &self.cert.to_der().unwrap_or_default());
        put_tlv(&mut inner, 0x71, &[0x00]);
        put_tlv(&mut inner, 0xFE, &[]);
        let mut out = Vec::new();
        put_tlv(&mut out, 0x53, &inner);
        out
    }

    /// ATTEST: a certificate for the generated key in `slot`, as a YubiKey makes it.
    pub fn attest(
        &self,
        slot: u8,
        key: &SlotKey,
        serial: u32,
        firmware: [u8; 3],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>, u16> {
        if key.origin != ORIGIN_GENERATED {
            return Err(SW_WRONG_DATA); // imported keys are never attested
        }
        let spki = slot_spki(key).ok_or(SW_WRONG_DATA)?;
        let serial_der = x509_cert::der::asn1::Uint::new(&serial.to_be_bytes())
            .and_then(|u| u.to_der())
            .map_err(|_| SW_WRONG_DATA)?;
        let ext = |oid, value: &[u8]| -> Result<Extension, u16> {
            Ok(Extension {
                extn_id: oid,
                critical: false,
                extn_value: OctetString::new(value).map_err(|_| SW_WRONG_DATA)?,
            })
        };
        let extensions = vec![
            ext(OID_FIRMWARE, &firmware)?,
            ext(OID_SERIAL, &serial_der)?,
            ext(OID_POLICY, &[key.pin, key.touch])?,
            ext(OID_FORM_FACTOR, &[FORM_FACTOR])?,
        ];
        let subject =
            name(&format!("CN=YubiKey PIV Attestation {slot:02x}")).map_err(|_| SW_WRONG_DATA)?;
        // Like a YubiKey: the validity of the attestation certificate is the f9 certificate's.
        let validity = self.cert.tbs_certificate.validity.clone();
        let issuer = self.cert.tbs_certificate.subject.clone();
        let cert = issue(
            rng,
            &self.key,
            &issuer,
            &subject,
            spki,
            extensions,
            Some(validity),
        )
        .map_err(|_| SW_WRONG_DATA)?;
        cert.to_der().map_err(|_| SW_WRONG_DATA)
    }
}

/// A certificate signed by `key` (ECDSA P-256, SHA-256).
fn issue(
    rng: &mut (impl RngCore + CryptoRng),
    key: &p256::ecdsa::SigningKey,
    issuer: &Name,
    subject: &Name,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
    validity: Option<Validity>,
) -> io::Result<Certificate> {
    use p256::ecdsa::signature::Signer as _;
    let err = |e: x509_cert::der::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7F) | 0x01;
    let algorithm = AlgorithmIdentifierOwned {
        oid: ECDSA_SHA256,
        parameters: None,
    };
    let validity = match validity {
        Some(v) => v,
        None => Validity::from_now(Duration::from_secs(20 * 365 * 86_400)).map_err(err)?,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(err)?,
        signature: algorithm.clone(),
        issuer: issuer.clone(),
        validity,
        subject: subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let signature: p256::ecdsa::Signature = key.sign(&tbs.to_der().map_err(err)?);
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(signature.to_der().as_bytes()).map_err(err)?,
    })
}

fn ca_extensions() -> io::Result<Vec<Extension>> {
    let bc = BasicConstraints {
        ca: true,
        path_len_constraint: None,
    };
    let value = bc
        .to_der()
        .and_then(OctetString::new)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(vec![Extension {
        extn_id: BasicConstraints::OID,
        critical: true,
        extn_value: value,
    }])
}

fn spki_of(key: &p256::ecdsa::SigningKey) -> io::Result<SubjectPublicKeyInfoOwned> {
    let der = p256::PublicKey::from(key.verifying_key())
        .to_public_key_der()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// The SPKI of a slot key from its metadata encoding.
fn slot_spki(key: &SlotKey) -> Option<SubjectPublicKeyInfoOwned> {
    let der = match key.alg {
        ALG_P256 | ALG_P384 => {
            let (0x86, point, _) = take_tlv2(&key.public)? else {
                return None;
            };
            let doc = if key.alg == ALG_P256 {
                p256::PublicKey::from_sec1_bytes(point)
                    .ok()?
                    .to_public_key_der()
                    .ok()?
            } else {
                p384::PublicKey::from_sec1_bytes(point)
                    .ok()?
                    .to_public_key_der()
                    .ok()?
            };
            doc.into_vec()
        }
        ALG_RSA2048 => {
            let (0x81, n, rest) = take_tlv2(&key.public)? else {
                return None;
            };
            let (0x82, e, _) = take_tlv2(rest)? else {
                return None;
            };
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let mut body = Vec::new();
            put_tlv(&mut body, 0x02, &der_uint(n));
            put_tlv(&mut body, 0x02, &der_uint(e));
            let mut rsa = Vec::new();
            put_tlv(&mut rsa, 0x30, &body);
            let spki = SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: RSA_ENCRYPTION,
                    parameters: Some(Any::null()),
                },
                subject_public_key: BitString::from_bytes(&rsa).ok()?,
            };
            return Some(spki);
        }
        _ => return None,
    };
    SubjectPublicKeyInfoOwned::from_der(&der).ok()
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => &[0u8][..],
    };
    let mut out = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
    out
}

fn name(s: &str) -> io::Result<Name> {
    Name::from_str(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

/// Writes a file that must not exist yet (two cards starting at once create the CA once).
fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)
}

// ---- TLV helpers -----------------------------------------------------------------------------

/// Reads one BER-TLV with a one- or two-byte tag (7F49): (tag, value, rest).
pub fn take_tlv2(data: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let (tag, rest) = match data {
        [0x7F, t, rest @ ..] => (0x7F00 | u16::from(*t), rest),
        [t, rest @ ..] => (u16::from(*t), rest),
        [] => return None,
    };
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7F => (usize::from(first), rest),
        0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            rest.get(2..)?,
        ),
        _ => return None,
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

pub fn put_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    match value.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => {
            out.push(0x82);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(value);
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
