//! `Pkcs11Token`: any PKCS#11 module (SoftHSM2, an HSM, OpenSC, ykcs11) through `cryptoki`.
//!
//! Key pairs are generated on the token, private halves `CKA_SENSITIVE` and not
//! `CKA_EXTRACTABLE`, labelled `<key>/<version>` with a random 16-byte `CKA_ID` that keyward
//! records in the audit log before generating. A version created wrappable is `CKA_SENSITIVE`,
//! `CKA_EXTRACTABLE` and `CKA_WRAP_WITH_TRUSTED`: it leaves the token only wrapped under a key
//! the SO trusted (see [`super::wrap`]).

use super::pubkey::{ecdsa_raw_to_der, PublicKey};
use super::*;
use crate::secret::Pin;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
// PrintableString "edwards25519", which older SoftHSM and some HSMs use instead of the OID.
const NAME_ED25519: &[u8] = b"\x13\x0cedwards25519";

/// Loaded modules, one per path per process: C_Initialize may be called only once.
fn module(path: &Path) -> TokenResult<Pkcs11> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let map = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| TokenError::Other("PKCS#11 module table poisoned".into()))?;
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let err = |detail: String| TokenError::Module {
        module: path.display().to_string(),
        detail,
    };
    if !path.exists() {
        return Err(err(
            "file not found; install the module (e.g. apt-get install softhsm2) or fix module_path in keyward.toml".into(),
        ));
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| err(format!("cannot load: {e}")))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(err(format!("C_Initialize failed: {e}"))),
    }
    map.insert(path.to_owned(), pkcs11.clone());
    Ok(pkcs11)
}

/// How to find a token among a module's slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSelector {
    pub label: Option<String>,
    pub serial: Option<String>,
    pub slot: Option<u64>,
}

impl TokenSelector {
    fn matches(&self, slot: Slot, info: &cryptoki::slot::TokenInfo) -> bool {
        self.label.as_deref().is_none_or(|l| info.label() == l)
            && self
                .serial
                .as_deref()
                .is_none_or(|s| info.serial_number() == s)
            && self.slot.is_none_or(|id| slot.id() == id)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.label {
            parts.push(format!("label {l:?}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial {s:?}"));
        }
        if let Some(s) = self.slot {
            parts.push(format!("slot {s}"));
        }
        if parts.is_empty() {
            "any token".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One slot's token as a module reports it.
#[derive(Clone, Debug)]
pub struct SlotDescription {
    pub slot: u64,
    pub initialized: bool,
    pub label: String,
    pub serial: String,
    pub model: String,
    pub manufacturer: String,
}

/// Lists the slots that hold a token.
pub fn list_slots(module_path: &Path) -> TokenResult<Vec<SlotDescription>> {
    let pkcs11 = module(module_path)?;
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| map_err(&module_path.display().to_string(), "C_GetSlotList", e))?;
    let mut out = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| map_err(&module_path.display().to_string(), "C_GetTokenInfo", e))?;
        out.push(SlotDescription {
            slot: slot.id(),
            initialized: info.token_initialized(),
            label: info.label().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
        });
    }
    Ok(out)
}

/// Initialises a token: the first slot holding an uninitialised token (SoftHSM2 always offers
/// one), SO PIN then user PIN. Returns the token's serial.
pub fn initialize_token(
    module_path: &Path,
    label: &str,
    so_pin: &Pin,
    user_pin: &Pin,
) -> TokenResult<SlotDescription> {
    let name = module_path.display().to_string();
    if label.is_empty() || label.len() > 32 {
        return Err(TokenError::Other(
            "a PKCS#11 token label must have 1 to 32 characters".into(),
        ));
    }
    // Two initialisations racing for the one free slot would wipe each other's token.
    static INIT: Mutex<()> = Mutex::new(());
    let _guard = INIT
        .lock()
        .map_err(|_| TokenError::Other("token initialisation lock poisoned".into()))?;
    let pkcs11 = module(module_path)?;
    let existing = list_slots(module_path)?;
    if existing.iter().any(|s| s.initialized && s.label == label) {
        return Err(TokenError::Other(format!(
            "a token labelled {label:?} is already initialised in {name}; choose another label, or register it in keyward.toml"
        )));
    }
    let Some(free) = existing.iter().find(|s| !s.initialized) else {
        return Err(TokenError::Other(format!(
            "{name} has no uninitialised token slot; for SoftHSM2 check SOFTHSM2_CONF and its tokendir"
        )));
    };
    let slot = pkcs11
        .get_slots_with_token()
        .map_err(|e| map_err(&name, "C_GetSlotList", e))?
        .into_iter()
        .find(|s| s.id() == free.slot)
        .ok_or_else(|| TokenError::NotPresent {
            token: name.clone(),
        })?;
    let fresh = pkcs11
        .get_token_info(slot)
        .map_err(|e| map_err(&name, "C_GetTokenInfo", e))?;
    if fresh.token_initialized() {
        return Err(TokenError::Other(format!(
            "the free slot of {name} was initialised by someone else meanwhile; retry"
        )));
    }
    pkcs11
        .init_token(slot, &auth(so_pin), label)
        .map_err(|e| map_err(&name, "C_InitToken", e))?;
    // SoftHSM2 moves the initialised token to a new slot id; find it again by label.
    let slots = list_slots(module_path)?;
    let created = slots
        .into_iter()
        .find(|s| s.initialized && s.label == label)
        .ok_or_else(|| TokenError::Other(format!("token {label:?} vanished after C_InitToken")))?;
    let slot = pkcs11
        .get_slots_with_token()
        .map_err(|e| map_err(&name, "C_GetSlotList", e))?
        .into_iter()
        .find(|s| s.id() == created.slot)
        .ok_or_else(|| TokenError::NotPresent {
            token: name.clone(),
        })?;
    let session = pkcs11
        .open_rw_session(slot)
        .map_err(|e| map_err(&name, "C_OpenSession", e))?;
    session
        .login(UserType::So, Some(&auth(so_pin)))
        .map_err(|e| map_err(&name, "C_Login(SO)", e))?;
    session
        .init_pin(&auth(user_pin))
        .map_err(|e| map_err(&name, "C_InitPIN", e))?;
    let _ = session.logout();
    Ok(created)
}

fn auth(pin: &Pin) -> AuthPin {
    AuthPin::from(pin.expose().to_owned())
}

fn map_err(token: &str, call: &'static str, e: CkError) -> TokenError {
    match e {
        CkError::Pkcs11(RvError::TokenNotPresent, _)
        | CkError::Pkcs11(RvError::DeviceRemoved, _)
        | CkError::Pkcs11(RvError::SlotIdInvalid, _)
        | CkError::Pkcs11(RvError::SessionHandleInvalid, _)
        | CkError::Pkcs11(RvError::SessionClosed, _) => TokenError::NotPresent {
            token: token.to_owned(),
        },
        CkError::Pkcs11(RvError::PinLocked, _) => TokenError::PinLocked {
            token: token.to_owned(),
        },
        CkError::Pkcs11(RvError::UserNotLoggedIn, _) => TokenError::NotLoggedIn {
            token: token.to_owned(),
        },
        other => TokenError::Backend {
            token: token.to_owned(),
            call,
            detail: other.to_string(),
        },
    }
}

/// A token in one slot of a PKCS#11 module, with its own session.
pub struct Pkcs11Token {
    name: String,
    module_path: PathBuf,
    pkcs11: Pkcs11,
    slot: Slot,
    session: Option<Session>,
    logged_in: bool,
    handles: HashMap<ObjectId, (ObjectHandle, Algorithm)>,
    /// The next `generate` makes a wrappable key.
    wrappable_next: bool,
    /// The trusted wrapping key installed for a backup (a session object).
    wrapping: Option<ObjectHandle>,
}

impl Pkcs11Token {
    /// Opens the one token that matches `selector` in the module at `module_path`.
    pub fn open(name: &str, module_path: &Path, selector: &TokenSelector) -> TokenResult<Self> {
        let pkcs11 = module(module_path)?;
        let slots = pkcs11
            .get_slots_with_token()
            .map_err(|e| map_err(name, "C_GetSlotList", e))?;
        let mut found = Vec::new();
        for slot in slots {
            let info = pkcs11
                .get_token_info(slot)
                .map_err(|e| map_err(name, "C_GetTokenInfo", e))?;
            if info.token_initialized() && selector.matches(slot, &info) {
                found.push(slot);
            }
        }
        match found.len() {
            0 => Err(TokenError::NotPresent {
                token: format!(
                    "{name} ({} in {})",
                    selector.describe(),
                    module_path.display()
                ),
            }),
            1 => Ok(Pkcs11Token {
                name: name.to_owned(),
                module_path: module_path.to_owned(),
                pkcs11,
                slot: found[0],
                session: None,
                logged_in: false,
                handles: HashMap::new(),
                wrappable_next: false,
                wrapping: None,
            }),
            n => Err(TokenError::Other(format!(
                "{n} tokens match {} in {}; name the token by serial in keyward.toml",
                selector.describe(),
                module_path.display()
            ))),
        }
    }

    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    fn session(&mut self) -> TokenResult<&Session> {
        if self.session.is_none() {
            let s = self
                .pkcs11
                .open_rw_session(self.slot)
                .map_err(|e| map_err(&self.name, "C_OpenSession", e))?;
            self.session = Some(s);
        }
        self.session.as_ref().ok_or(TokenError::NotPresent {
            token: self.name.clone(),
        })
    }

    fn mechanisms(&self) -> TokenResult<Vec<MechanismType>> {
        self.pkcs11
            .get_mechanism_list(self.slot)
            .map_err(|e| map_err(&self.name, "C_GetMechanismList", e))
    }

    fn find(&mut self, class: ObjectClass, id: &[u8]) -> TokenResult<Option<ObjectHandle>> {
        let name = self.name.clone();
        let session = self.session()?;
        let found = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
            .map_err(|e| map_err(&name, "C_FindObjects", e))?;
        Ok(found.into_iter().next())
    }

    /// Creates the public object beside a private key just placed on the token (imported or
    /// unwrapped) and returns the pair; on failure the private key is removed again.
    fn pair_with_public(
        &mut self,
        private_handle: ObjectHandle,
        public: &[Attribute],
        object_id: &ObjectId,
    ) -> TokenResult<TokenKey> {
        let pub_handle = match self.session()?.create_object(public) {
            Ok(h) => h,
            Err(e) => {
                let _ = self.session()?.destroy_object(private_handle);
                return Err(map_err(&self.name, "C_CreateObject", e));
            }
        };
        let (label, _, public_key) = self.read_public(pub_handle)?;
        Ok(TokenKey {
            object_id: object_id.clone(),
            label,
            algorithm: public_key.algorithm(),
            public_key,
            has_private: true,
        })
    }

    fn read_public(&mut self, handle: ObjectHandle) -> TokenResult<(String, Vec<u8>, PublicKey)> {
        let name = self.name.clone();
        let session = self.session()?;
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Label,
                    AttributeType::Id,
                    AttributeType::KeyType,
                ],
            )
            .map_err(|e| map_err(&name, "C_GetAttributeValue", e))?;
        let mut label = String::new();
        let mut id = Vec::new();
        let mut key_type = None;
        for a in attrs {
            match a {
                Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Id(i) => id = i,
                Attribute::KeyType(k) => key_type = Some(k),
                _ => {}
            }
        }
        let public_key = match key_type {
            Some(KeyType::EC) | Some(KeyType::EC_EDWARDS) => {
                let attrs = session
                    .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
                    .map_err(|e| map_err(&name, "C_GetAttributeValue", e))?;
                let (mut params, mut point) = (Vec::new(), Vec::new());
                for a in attrs {
                    match a {
                        Attribute::EcParams(p) => params = p,
                        Attribute::EcPoint(p) => point = p,
                        _ => {}
                    }
                }
                let algorithm = if params == OID_P256 {
                    Algorithm::P256
                } else if params == OID_P384 {
                    Algorithm::P384
                } else if params == OID_ED25519 || params == NAME_ED25519 {
                    Algorithm::Ed25519
                } else {
                    return Err(TokenError::Other(format!(
                        "{name}: key {label:?} uses an unsupported curve ({})",
                        hex::encode(&params)
                    )));
                };
                PublicKey::from_ec_point(algorithm, &unwrap_octet_string(algorithm, &point))?
            }
            Some(KeyType::RSA) => {
                let attrs = session
                    .get_attributes(
                        handle,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(|e| map_err(&name, "C_GetAttributeValue", e))?;
                let (mut n, mut e) = (Vec::new(), Vec::new());
                for a in attrs {
                    match a {
                        Attribute::Modulus(m) => n = m,
                        Attribute::PublicExponent(x) => e = x,
                        _ => {}
                    }
                }
                PublicKey::from_rsa(&n, &e)?
            }
            other => {
                return Err(TokenError::Other(format!(
                    "{name}: key {label:?} has an unsupported key type {other:?}"
                )))
            }
        };
        Ok((label, id, public_key))
    }

    fn private_handle(&mut self, object_id: &ObjectId) -> TokenResult<(ObjectHandle, Algorithm)> {
        if let Some(h) = self.handles.get(object_id) {
            return Ok(*h);
        }
        let id = parse_id(object_id)?;
        let token = self.name.clone();
        let not_found = || TokenError::KeyNotFound {
            token: token.clone(),
            object_id: object_id.0.clone(),
        };
        let public = self
            .find(ObjectClass::PUBLIC_KEY, &id)?
            .ok_or_else(not_found)?;
        let (_, _, pk) = self.read_public(public)?;
        let private = self
            .find(ObjectClass::PRIVATE_KEY, &id)?
            .ok_or_else(not_found)?;
        self.handles
            .insert(object_id.clone(), (private, pk.algorithm()));
        Ok((private, pk.algorithm()))
    }
}

impl Pkcs11Token {
    /// Creates an AES-256 session key from `key`, for wrapping (`wrap`) or unwrapping.
    fn session_aes_key(
        &mut self,
        key: &WrappingKey,
        wrap: bool,
        extra: &[Attribute],
    ) -> TokenResult<ObjectHandle> {
        use zeroize::Zeroize;
        let name = self.name.clone();
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(wrap),
            Attribute::Unwrap(!wrap),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Label(b"keyward wrapping key".to_vec()),
            Attribute::Value(key.expose().to_vec()),
        ];
        template.extend_from_slice(extra);
        let created = self.session()?.create_object(&template);
        for a in template.iter_mut() {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        created.map_err(|e| map_err(&name, "C_CreateObject (wrapping key)", e))
    }

    /// A wrappable key must not leave the token under a key nobody trusted: wrap it with a
    /// throwaway untrusted key and expect the token to refuse (`CKR_KEY_NOT_WRAPPABLE`).
    fn untrusted_wrap_is_refused(&mut self, key: ObjectHandle) -> TokenResult<()> {
        use zeroize::Zeroize;
        let name = self.name.clone();
        let probe = WrappingKey::generate();
        let h = self.session_aes_key(&probe, true, &[Attribute::Private(true)])?;
        let session = self.session()?;
        let r = session.wrap_key(&Mechanism::AesKeyWrapPad, h, key);
        let _ = session.destroy_object(h);
        match r {
            Err(CkError::Pkcs11(RvError::KeyNotWrappable, _)) => Ok(()),
            Ok(mut blob) => {
                blob.zeroize();
                Err(TokenError::Other(format!(
                    "{name} let an untrusted key wrap a key marked CKA_WRAP_WITH_TRUSTED: it does not enforce the attribute, so anyone with the user PIN could export the key; keyward does not create wrappable keys on this token"
                )))
            }
            Err(e) => Err(map_err(
                &name,
                "C_WrapKey (checking CKA_WRAP_WITH_TRUSTED)",
                e,
            )),
        }
    }
}

/// The attributes of a public key object for `pk` (restore by unwrapping).
fn public_key_attributes(pk: &PublicKey) -> TokenResult<Vec<Attribute>> {
    use spki::DecodePublicKey;
    let bad = |e: String| TokenError::Other(format!("public key: {e}"));
    let octets = |p: &[u8]| {
        let mut v = vec![0x04];
        if p.len() >= 0x80 {
            v.push(0x81);
        }
        v.push(p.len() as u8);
        v.extend_from_slice(p);
        v
    };
    let der = pk.spki_der();
    Ok(match pk.algorithm() {
        Algorithm::P256 => {
            let k = p256::PublicKey::from_public_key_der(der).map_err(|e| bad(e.to_string()))?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k, false);
            vec![
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(OID_P256.to_vec()),
                Attribute::EcPoint(octets(point.as_bytes())),
            ]
        }
        Algorithm::P384 => {
            let k = p384::PublicKey::from_public_key_der(der).map_err(|e| bad(e.to_string()))?;
            let point = p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k, false);
            vec![
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(OID_P384.to_vec()),
                Attribute::EcPoint(octets(point.as_bytes())),
            ]
        }
        Algorithm::Ed25519 => {
            let k = ed25519_dalek::VerifyingKey::from_public_key_der(der)
                .map_err(|e| bad(e.to_string()))?;
            vec![
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::EcParams(OID_ED25519.to_vec()),
                Attribute::EcPoint(octets(k.as_bytes())),
            ]
        }
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            use rsa::traits::PublicKeyParts;
            let k = rsa::RsaPublicKey::from_public_key_der(der).map_err(|e| bad(e.to_string()))?;
            vec![
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(k.n().to_bytes_be()),
                Attribute::PublicExponent(k.e().to_bytes_be()),
            ]
        }
    })
}

fn parse_id(object_id: &ObjectId) -> TokenResult<Vec<u8>> {
    hex::decode(&object_id.0)
        .map_err(|_| TokenError::Other(format!("invalid PKCS#11 object id {object_id}")))
}

/// CKA_EC_POINT is a DER OCTET STRING holding the point; some modules return the raw point.
fn unwrap_octet_string(algorithm: Algorithm, value: &[u8]) -> Vec<u8> {
    let raw_len = match algorithm {
        Algorithm::P256 => 65,
        Algorithm::P384 => 97,
        _ => 32,
    };
    if value.len() == raw_len {
        return value.to_vec();
    }
    if value.first() == Some(&0x04) {
        let (len, header) = match value.get(1) {
            Some(&l) if l < 0x80 => (l as usize, 2),
            Some(&0x81) => (value.get(2).copied().unwrap_or(0) as usize, 3),
            _ => (0, 0),
        };
        if header > 0 && value.len() == header + len {
            return value[header..].to_vec();
        }
    }
    value.to_vec()
}

impl Token for Pkcs11Token {
    fn info(&self) -> TokenResult<TokenInfo> {
        let info = self
            .pkcs11
            .get_token_info(self.slot)
            .map_err(|e| map_err(&self.name, "C_GetTokenInfo", e))?;
        let mechs = self.mechanisms().unwrap_or_default();
        let mut algorithms = Vec::new();
        if mechs.contains(&MechanismType::ECC_KEY_PAIR_GEN) && mechs.contains(&MechanismType::ECDSA)
        {
            algorithms.extend([Algorithm::P256, Algorithm::P384]);
        }
        if mechs.contains(&MechanismType::RSA_PKCS_KEY_PAIR_GEN)
            && mechs.contains(&MechanismType::SHA256_RSA_PKCS)
        {
            algorithms.extend([Algorithm::Rsa2048, Algorithm::Rsa3072, Algorithm::Rsa4096]);
        }
        if mechs.contains(&MechanismType::ECC_EDWARDS_KEY_PAIR_GEN)
            && mechs.contains(&MechanismType::EDDSA)
        {
            algorithms.push(Algorithm::Ed25519);
        }
        let fw = info.firmware_version();
        Ok(TokenInfo {
            kind: TokenKind::Pkcs11,
            label: info.label().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
            firmware: format!("{}.{}", fw.major(), fw.minor()),
            pin: PinStatus {
                tries_left: if info.user_pin_locked() {
                    Some(0)
                } else if info.user_pin_final_try() {
                    Some(1)
                } else {
                    None
                },
                count_low: info.user_pin_count_low(),
                final_try: info.user_pin_final_try(),
                locked: info.user_pin_locked(),
                not_initialized: !info.user_pin_initialized(),
            },
            hardware: true,
            algorithms,
            puk_tries_left: None,
            warnings: Vec::new(),
        })
    }

    fn login(&mut self, pin: &Pin) -> TokenResult<()> {
        if self.logged_in {
            return Ok(());
        }
        let name = self.name.clone();
        let result = self.session()?.login(UserType::User, Some(&auth(pin)));
        match result {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                self.logged_in = true;
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                let status = self.info().map(|i| i.pin).unwrap_or_default();
                if status.locked {
                    return Err(TokenError::PinLocked { token: name });
                }
                Err(TokenError::PinIncorrect {
                    token: name,
                    tries_left: if status.final_try { Some(1) } else { None },
                })
            }
            Err(e) => Err(map_err(&name, "C_Login", e)),
        }
    }

    fn is_logged_in(&self) -> bool {
        self.logged_in
    }

    fn list_keys(&mut self) -> TokenResult<Vec<TokenKey>> {
        let name = self.name.clone();
        let publics = self
            .session()?
            .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
            .map_err(|e| map_err(&name, "C_FindObjects", e))?;
        let mut keys = Vec::new();
        for handle in publics {
            let (label, id, public_key) = match self.read_public(handle) {
                Ok(v) => v,
                // A public key of a type keyward does not use is simply not one of ours.
                Err(TokenError::Other(_)) => continue,
                Err(e) => return Err(e),
            };
            let has_private = if self.logged_in {
                self.find(ObjectClass::PRIVATE_KEY, &id)?.is_some()
            } else {
                true
            };
            keys.push(TokenKey {
                object_id: ObjectId(hex::encode(&id)),
                label,
                algorithm: public_key.algorithm(),
                public_key,
                has_private,
            });
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    fn generate(&mut self, request: &GenerateRequest) -> TokenResult<TokenKey> {
        let name = self.name.clone();
        if !self.logged_in {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        let id = parse_id(&request.object_id)?;
        let mechs = self.mechanisms()?;
        let wrappable = std::mem::take(&mut self.wrappable_next);
        let label = request.label.as_bytes().to_vec();
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(wrappable),
            Attribute::Sign(true),
            Attribute::Label(label),
            Attribute::Id(id),
        ];
        let unsupported = |why: &str| TokenError::Unsupported {
            token: name.clone(),
            algorithm: request.algorithm,
            why: why.to_owned(),
        };
        if wrappable {
            if request.algorithm == Algorithm::Ed25519 {
                return Err(unsupported(
                    "keyward wraps P-256, P-384 and RSA keys only: PKCS#11 2.40 modules such as SoftHSM2 2.6 cannot wrap an Ed25519 private key, so a wrappable one could never be backed up",
                ));
            }
            if !mechs.contains(&MechanismType::AES_KEY_WRAP_PAD) {
                return Err(unsupported(
                    "a wrappable key needs CKM_AES_KEY_WRAP_PAD (RFC 5649), which the token does not list",
                ));
            }
            // Extractable only under a wrapping key the SO marked CKA_TRUSTED.
            private.push(Attribute::WrapWithTrusted(true));
        }
        let mechanism = match request.algorithm {
            Algorithm::P256 | Algorithm::P384 => {
                if !mechs.contains(&MechanismType::ECC_KEY_PAIR_GEN) {
                    return Err(unsupported("the token does not list CKM_EC_KEY_PAIR_GEN"));
                }
                let oid = if request.algorithm == Algorithm::P256 {
                    OID_P256
                } else {
                    OID_P384
                };
                public.push(Attribute::EcParams(oid.to_vec()));
                Mechanism::EccKeyPairGen
            }
            Algorithm::Ed25519 => {
                if !mechs.contains(&MechanismType::ECC_EDWARDS_KEY_PAIR_GEN) {
                    return Err(unsupported(
                        "the token does not list CKM_EC_EDWARDS_KEY_PAIR_GEN",
                    ));
                }
                public.push(Attribute::EcParams(OID_ED25519.to_vec()));
                Mechanism::EccEdwardsKeyPairGen
            }
            Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
                if !mechs.contains(&MechanismType::RSA_PKCS_KEY_PAIR_GEN) {
                    return Err(unsupported(
                        "the token does not list CKM_RSA_PKCS_KEY_PAIR_GEN",
                    ));
                }
                let bits = match request.algorithm {
                    Algorithm::Rsa2048 => 2048,
                    Algorithm::Rsa3072 => 3072,
                    _ => 4096,
                };
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let (pub_handle, priv_handle) = self
            .session()?
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| map_err(&name, "C_GenerateKeyPair", e))?;
        if wrappable {
            if let Err(e) = self.untrusted_wrap_is_refused(priv_handle) {
                // Never leave a key whose export the token does not guard.
                if let Ok(session) = self.session() {
                    let _ = session.destroy_object(priv_handle);
                    let _ = session.destroy_object(pub_handle);
                }
                return Err(e);
            }
        }
        let (label, _, public_key) = self.read_public(pub_handle)?;
        Ok(TokenKey {
            object_id: request.object_id.clone(),
            label,
            algorithm: public_key.algorithm(),
            public_key,
            has_private: true,
        })
    }

    fn sign(&mut self, object_id: &ObjectId, data: &[u8]) -> TokenResult<Vec<u8>> {
        let name = self.name.clone();
        if !self.logged_in {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        let (handle, algorithm) = self.private_handle(object_id)?;
        let session = self.session()?;
        let sign = |m: &Mechanism, d: &[u8]| {
            session
                .sign(m, handle, d)
                .map_err(|e| map_err(&name, "C_Sign", e))
        };
        match algorithm {
            Algorithm::P256 | Algorithm::P384 => {
                let raw = sign(&Mechanism::Ecdsa, &Sha256::digest(data))?;
                ecdsa_raw_to_der(algorithm, &raw)
            }
            Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
                sign(&Mechanism::Sha256RsaPkcs, data)
            }
            Algorithm::Ed25519 => sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                data,
            ),
        }
    }

    fn public_key(&mut self, object_id: &ObjectId) -> TokenResult<PublicKey> {
        let id = parse_id(object_id)?;
        let handle =
            self.find(ObjectClass::PUBLIC_KEY, &id)?
                .ok_or_else(|| TokenError::KeyNotFound {
                    token: self.name.clone(),
                    object_id: object_id.0.clone(),
                })?;
        Ok(self.read_public(handle)?.2)
    }

    fn import_key(&mut self, request: &GenerateRequest, pkcs8: &[u8]) -> TokenResult<TokenKey> {
        use p256::pkcs8::DecodePrivateKey;
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        use zeroize::Zeroize;
        let name = self.name.clone();
        if !self.logged_in {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        let id = parse_id(&request.object_id)?;
        let label = request.label.as_bytes().to_vec();
        let bad = |e: String| {
            TokenError::Other(format!("invalid {} private key: {e}", request.algorithm))
        };
        // The private key is created sensitive and non-extractable, like a generated one.
        let mut private = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let mut public = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(label),
            Attribute::Id(id),
        ];
        let octets = |p: &[u8]| {
            let mut v = vec![0x04];
            if p.len() >= 0x80 {
                v.push(0x81);
            }
            v.push(p.len() as u8);
            v.extend_from_slice(p);
            v
        };
        match request.algorithm {
            Algorithm::P256 => {
                let k = p256::SecretKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &k.public_key(),
                    false,
                );
                private.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(OID_P256.to_vec()),
                    Attribute::Value(k.to_bytes().to_vec()),
                ]);
                public.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(OID_P256.to_vec()),
                    Attribute::EcPoint(octets(point.as_bytes())),
                ]);
            }
            Algorithm::P384 => {
                let k = p384::SecretKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
                let point = p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &k.public_key(),
                    false,
                );
                private.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(OID_P384.to_vec()),
                    Attribute::Value(k.to_bytes().to_vec()),
                ]);
                public.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(OID_P384.to_vec()),
                    Attribute::EcPoint(octets(point.as_bytes())),
                ]);
            }
            Algorithm::Ed25519 => {
                let k = ed25519_dalek::SigningKey::from_pkcs8_der(pkcs8)
                    .map_err(|e| bad(e.to_string()))?;
                private.extend([
                    Attribute::KeyType(KeyType::EC_EDWARDS),
                    Attribute::EcParams(OID_ED25519.to_vec()),
                    Attribute::Value(k.to_bytes().to_vec()),
                ]);
                public.extend([
                    Attribute::KeyType(KeyType::EC_EDWARDS),
                    Attribute::EcParams(OID_ED25519.to_vec()),
                    Attribute::EcPoint(octets(k.verifying_key().as_bytes())),
                ]);
            }
            _ => {
                let k =
                    rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
                let primes = k.primes();
                let (Some(dp), Some(dq), Some(qinv), [p, q]) =
                    (k.dp(), k.dq(), k.crt_coefficient(), primes)
                else {
                    return Err(bad("not a two-prime RSA key".into()));
                };
                let n = k.n().to_bytes_be();
                let e = k.e().to_bytes_be();
                private.extend([
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Modulus(n.clone()),
                    Attribute::PublicExponent(e.clone()),
                    Attribute::PrivateExponent(k.d().to_bytes_be()),
                    Attribute::Prime1(p.to_bytes_be()),
                    Attribute::Prime2(q.to_bytes_be()),
                    Attribute::Exponent1(dp.to_bytes_be()),
                    Attribute::Exponent2(dq.to_bytes_be()),
                    Attribute::Coefficient(qinv.to_bytes_be()),
                ]);
                public.extend([
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Modulus(n),
                    Attribute::PublicExponent(e),
                ]);
            }
        }
        let created = self.session()?.create_object(&private);
        for a in private.iter_mut() {
            match a {
                Attribute::Value(v)
                | Attribute::PrivateExponent(v)
                | Attribute::Prime1(v)
                | Attribute::Prime2(v)
                | Attribute::Exponent1(v)
                | Attribute::Exponent2(v)
                | Attribute::Coefficient(v) => v.zeroize(),
                _ => {}
            }
        }
        let private_handle = created.map_err(|e| map_err(&name, "C_CreateObject", e))?;
        self.pair_with_public(private_handle, &public, &request.object_id)
    }

    fn wrappable(&mut self, object_id: &ObjectId) -> TokenResult<Option<bool>> {
        if !self.logged_in {
            // Private keys are invisible before login.
            return Ok(None);
        }
        let (handle, _) = self.private_handle(object_id)?;
        let attrs = self
            .session()?
            .get_attributes(
                handle,
                &[AttributeType::Extractable, AttributeType::WrapWithTrusted],
            )
            .map_err(|e| map_err(&self.name, "C_GetAttributeValue", e))?;
        let (mut extractable, mut trusted_only) = (false, false);
        for a in attrs {
            match a {
                Attribute::Extractable(b) => extractable = b,
                Attribute::WrapWithTrusted(b) => trusted_only = b,
                _ => {}
            }
        }
        Ok(Some(extractable && trusted_only))
    }

    fn set_wrappable(&mut self, wrappable: bool) -> TokenResult<()> {
        self.wrappable_next = wrappable;
        Ok(())
    }

    fn install_wrapping_key(&mut self, key: &WrappingKey, so_pin: &Pin) -> TokenResult<()> {
        let name = self.name.clone();
        if self.logged_in {
            return Err(TokenError::Other(format!(
                "{name}: the user is logged in; the SO installs the wrapping key first"
            )));
        }
        self.remove_wrapping_key()?;
        match self.session()?.login(UserType::So, Some(&auth(so_pin))) {
            Ok(()) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(TokenError::Other(format!(
                    "wrong SO PIN for {name}: the SO must authorise wrapping keys out of the token"
                )))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(TokenError::Other(format!(
                    "the SO PIN of {name} is locked: no key can be wrapped out of it"
                )))
            }
            Err(CkError::Pkcs11(RvError::UserAnotherAlreadyLoggedIn, _))
            | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                return Err(TokenError::Other(format!(
                    "{name}: another session of this program is logged in; close it so the SO can install the wrapping key"
                )))
            }
            Err(e) => return Err(map_err(&name, "C_Login(SO)", e)),
        }
        // A public session object (the SO cannot create private ones), usable only to wrap,
        // only with CKM_AES_KEY_WRAP_PAD; it vanishes with the session.
        let created = self.session_aes_key(
            key,
            true,
            &[
                Attribute::Private(false),
                Attribute::Trusted(true),
                Attribute::AllowedMechanisms(vec![MechanismType::AES_KEY_WRAP_PAD]),
                Attribute::Id(hex::decode(key.id()).unwrap_or_default()),
            ],
        );
        let _ = self.session()?.logout();
        self.handles.clear();
        self.wrapping = Some(created?);
        Ok(())
    }

    fn wrap_key(&mut self, object_id: &ObjectId) -> TokenResult<Vec<u8>> {
        let name = self.name.clone();
        if !self.logged_in {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        let wrapping = self
            .wrapping
            .ok_or_else(|| TokenError::Other(format!("{name}: no wrapping key is installed")))?;
        let (handle, _) = self.private_handle(object_id)?;
        match self
            .session()?
            .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, handle)
        {
            Ok(blob) => Ok(blob),
            Err(CkError::Pkcs11(RvError::KeyUnextractable, _)) => Err(TokenError::Other(format!(
                "{name}: key {object_id} was generated non-extractable; it cannot be wrapped"
            ))),
            Err(CkError::Pkcs11(RvError::KeyNotWrappable, _)) => Err(TokenError::Other(format!(
                "{name}: key {object_id} cannot be wrapped with CKM_AES_KEY_WRAP_PAD under the SO-trusted wrapping key"
            ))),
            Err(e) => Err(map_err(&name, "C_WrapKey", e)),
        }
    }

    fn remove_wrapping_key(&mut self) -> TokenResult<()> {
        if let Some(h) = self.wrapping.take() {
            let name = self.name.clone();
            self.session()?
                .destroy_object(h)
                .map_err(|e| map_err(&name, "C_DestroyObject (wrapping key)", e))?;
        }
        Ok(())
    }

    fn unwrap_key(
        &mut self,
        request: &GenerateRequest,
        key: &WrappingKey,
        blob: &[u8],
        public_key: &PublicKey,
    ) -> TokenResult<TokenKey> {
        let name = self.name.clone();
        if !self.logged_in {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        if !self
            .mechanisms()?
            .contains(&MechanismType::AES_KEY_WRAP_PAD)
        {
            return Err(TokenError::Unsupported {
                token: name,
                algorithm: request.algorithm,
                why: "the token does not list CKM_AES_KEY_WRAP_PAD (RFC 5649) for C_UnwrapKey"
                    .into(),
            });
        }
        let id = parse_id(&request.object_id)?;
        let label = request.label.as_bytes().to_vec();
        let mut public = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        public.extend(public_key_attributes(public_key)?);
        let key_type = match request.algorithm {
            Algorithm::P256 | Algorithm::P384 => KeyType::EC,
            Algorithm::Ed25519 => KeyType::EC_EDWARDS,
            _ => KeyType::RSA,
        };
        // As the key was on its first token: sensitive, and wrappable only under a trusted key.
        let private = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(true),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label),
            Attribute::Id(id),
        ];
        let unwrapping = self.session_aes_key(key, false, &[Attribute::Private(true)])?;
        let session = self.session()?;
        let unwrapped = session.unwrap_key(&Mechanism::AesKeyWrapPad, unwrapping, blob, &private);
        let _ = session.destroy_object(unwrapping);
        let private_handle = unwrapped.map_err(|e| map_err(&name, "C_UnwrapKey", e))?;
        // This token must guard the export of the key as the first one did.
        if let Err(e) = self.untrusted_wrap_is_refused(private_handle) {
            let _ = self.session()?.destroy_object(private_handle);
            return Err(e);
        }
        self.pair_with_public(private_handle, &public, &request.object_id)
    }

    fn destroy(&mut self, object_id: &ObjectId) -> TokenResult<()> {
        let name = self.name.clone();
        if !self.logged_in {
            return Err(TokenError::NotLoggedIn { token: name });
        }
        let id = parse_id(object_id)?;
        self.handles.remove(object_id);
        let mut found = false;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            while let Some(h) = self.find(class, &id)? {
                self.session()?
                    .destroy_object(h)
                    .map_err(|e| map_err(&name, "C_DestroyObject", e))?;
                found = true;
            }
        }
        if !found {
            return Err(TokenError::KeyNotFound {
                token: name,
                object_id: object_id.0.clone(),
            });
        }
        Ok(())
    }
}
