//! APDU glue between vpcd and piv-authenticator, with the fixes the `yubikey` crate needs.
//!
//! Everything that must outlive one power cycle of the card (the serial, the objects this
//! glue stores itself, the PUK retry mirror, the keys it knows, half-received chained
//! commands) lives in [`Glue`]; the [`Card`] wraps one session's piv-authenticator instance
//! and the session's PIN state. What piv-authenticator lacks entirely (metadata,
//! attestation, EC import) is in [`crate::yubico`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use iso7816::command::{CommandView, FromSliceError};
use iso7816::{Command, Status};
use piv_authenticator::{Authenticator, Client};
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::yubico::{self, hex, put_tlv, take_tlv2, Attestor, Keys};

/// Largest command (after chaining) or response handled; upstream uses the same size.
const BUF_LEN: usize = 7609;

/// The PIV application identifier; the yubikey crate selects only its first 5 bytes.
const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// ATR of a YubiKey 5 over CCID (T=1).
const YUBIKEY_ATR: &[u8] = &[
    0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
];

/// Default firmware version reported by GET VERSION (`--firmware`): below 5.7 the yubikey
/// crate 0.9 stays on 3DES management keys; from 5.3 on, GET METADATA is answered.
pub const DEFAULT_FIRMWARE: [u8; 3] = [5, 4, 3];
const METADATA_SINCE: [u8; 3] = [5, 3, 0];
/// The attestation certificate object (slot f9's certificate); a reset keeps it.
const ATTESTATION_OBJECT: [u8; 3] = [0x5F, 0xFF, 0x01];

/// Data objects a factory YubiKey has (empty) that piv-authenticator lacks or pre-fills:
/// admin data, attestation certificate, printed information, key history, CCC.
const GLUE_OBJECTS: [[u8; 3]; 5] = [
    [0x5F, 0xFF, 0x00],
    [0x5F, 0xFF, 0x01],
    [0x5F, 0xC1, 0x09],
    [0x5F, 0xC1, 0x0C],
    [0x5F, 0xC1, 0x07],
];
const PRINTED_INFORMATION: [u8; 3] = [0x5F, 0xC1, 0x09];
/// An object piv-authenticator stores but whose content nobody reads back (this glue serves
/// 5FC10C itself); writing it empty is how the glue asks "is the management key authenticated?".
const ADMIN_PROBE: [u8; 7] = [0x5C, 0x03, 0x5F, 0xC1, 0x0C, 0x53, 0x00];

/// piv-authenticator's PUK retry limit (`Persistent::PUK_RETRIES_DEFAULT`).
const PUK_RETRIES: u8 = 5;

const SW_OK: u16 = 0x9000;
const SW_WRONG_LENGTH: u16 = 0x6700;
const SW_SECURITY: u16 = 0x6982;
const SW_NOT_FOUND: u16 = 0x6A82;
const SW_INS_NOT_SUPPORTED: u16 = 0x6D00;
const SW_VERIFY_FAILED: u16 = 0x6300;
const SW_WRONG_DATA: u16 = 0x6A80;
const SW_NO_PRECISE_DIAGNOSIS: u16 = 0x6F00;
const SW_PIN_BLOCKED: u16 = 0x6983;

/// Card state that survives power cycles.
pub struct Glue {
    serial: u32,
    firmware: [u8; 3],
    verbose: bool,
    state_dir: Option<PathBuf>,
    objects: BTreeMap<[u8; 3], Vec<u8>>,
    puk_tries: u8,
    keys: Keys,
    attestor: Attestor,
    seeds: ChaCha8Rng,
    chain: Option<Command<BUF_LEN>>,
    response: Vec<u8>,
    response_offset: usize,
    restart: bool,
    announced: bool,
}

impl Glue {
    pub fn new(
        serial: u32,
        firmware: [u8; 3],
        seed: Option<u64>,
        state_dir: Option<PathBuf>,
        attestation_ca: Option<PathBuf>,
        verbose: bool,
    ) -> io::Result<Self> {
        let mut seeds = match seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_seed(Self::urandom_seed()?),
        };
        let root = yubico::root_ca(attestation_ca.as_deref(), &mut seeds)?;
        let attestor = Attestor::new(serial, &root, state_dir.as_deref(), &mut seeds)?;
        let mut glue = Self {
            serial,
            firmware,
            verbose,
            state_dir,
            objects: BTreeMap::new(),
            puk_tries: PUK_RETRIES,
            keys: Keys::default(),
            attestor,
            seeds,
            chain: None,
            response: Vec::new(),
            response_offset: 0,
            restart: false,
            announced: false,
        };
        glue.load()?;
        if !glue.objects.contains_key(&ATTESTATION_OBJECT) {
            // A factory YubiKey holds its attestation certificate in f9.
            let object = glue.attestor.object();
            glue.objects.insert(ATTESTATION_OBJECT, object);
        }
        Ok(glue)
    }

    pub fn urandom_seed() -> io::Result<[u8; 32]> {
        let mut bytes = [0u8; 32];
        fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    /// Seed for the next session's platform RNG.
    pub fn next_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.seeds.fill_bytes(&mut seed);
        seed
    }

    /// True once per request to end the current session (power cycle or SELECT).
    pub fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restart)
    }

    fn load(&mut self) -> io::Result<()> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let objects = dir.join("objects");
        fs::create_dir_all(&objects)?;
        for id in GLUE_OBJECTS {
            match fs::read(objects.join(hex(&id))) {
                Ok(data) => {
                    self.objects.insert(id, data);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Ok(tries) = fs::read_to_string(dir.join("puk-tries")) {
            self.puk_tries = tries.trim().parse().unwrap_or(PUK_RETRIES);
        }
        self.keys = Keys::load(&dir.join("keys"))?;
        Ok(())
    }

    fn save(&self) {
        let Some(dir) = &self.state_dir else { return };
        let result = (|| -> io::Result<()> {
            for id in GLUE_OBJECTS {
                let path = dir.join("objects").join(hex(&id));
                match self.objects.get(&id) {
                    Some(data) => fs::write(path, data)?,
                    None => match fs::remove_file(path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    },
                }
            }
            fs::write(dir.join("puk-tries"), format!("{}\n", self.puk_tries))?;
            self.keys.save(&dir.join("keys"))
        })();
        if let Err(e) = result {
            eprintln!(
                "virtual-piv-card: cannot save state in {}: {e}",
                dir.display()
            );
        }
    }

    fn set_puk_tries(&mut self, tries: u8) {
        if self.puk_tries != tries {
            self.puk_tries = tries;
            self.save();
        }
    }
}

/// One session (power cycle) of the card.
pub struct Card<'g, T: Client> {
    app: Authenticator<T>,
    glue: &'g mut Glue,
    /// The PIN was verified in this session (for the keys the glue signs with).
    pin_verified: bool,
    /// ... and no PIN-always key of the glue has used that verification yet.
    pin_fresh: bool,
}

impl<'g, T: Client> Card<'g, T> {
    pub fn new(app: Authenticator<T>, glue: &'g mut Glue) -> Self {
        Self {
            app,
            glue,
            pin_verified: false,
            pin_fresh: false,
        }
    }

    pub fn glue(&mut self) -> &mut Glue {
        self.glue
    }

    /// Handles one APDU as received from vpcd; returns response data and status word.
    fn handle(&mut self, apdu: &[u8]) -> (Vec<u8>, u16) {
        let command = match CommandView::try_from(apdu) {
            Ok(command) => command,
            Err(e) => return (Vec::new(), parse_error(e)),
        };
        let le = match command.expected() {
            0 => 256, // no Le: answer up to 256 bytes, as a YubiKey does
            n => n,
        };

        if u8::from(command.instruction()) == 0xC0 {
            return self.next_chunk(le);
        }

        // Command chaining (CLA bit 0x10): collect until the last part arrives.
        if command.class().chain().not_the_last() {
            let result = match &mut self.glue.chain {
                Some(chain) => chain.extend_from_command_view(command).map_err(|_| ()),
                None => command
                    .to_owned()
                    .map(|c| self.glue.chain = Some(c))
                    .map_err(|_| ()),
            };
            if result.is_err() {
                self.glue.chain = None;
                return (Vec::new(), SW_WRONG_LENGTH);
            }
            return (Vec::new(), SW_OK);
        }
        let full: Command<BUF_LEN> = match self.glue.chain.take() {
            Some(mut chain) => match chain.extend_from_command_view(command) {
                Ok(()) => chain,
                Err(_) => return (Vec::new(), SW_WRONG_LENGTH),
            },
            None => match command.to_owned() {
                Ok(c) => c,
                Err(e) => return (Vec::new(), parse_error(e)),
            },
        };

        self.glue.response.clear();
        self.glue.response_offset = 0;
        match self.dispatch(&full) {
            Ok(data) => {
                self.glue.response = data;
                self.next_chunk(le)
            }
            Err(sw) => (Vec::new(), sw),
        }
    }

    fn next_chunk(&mut self, le: usize) -> (Vec<u8>, u16) {
        let glue = &mut *self.glue;
        let rest = &glue.response[glue.response_offset..];
        let n = le.min(rest.len());
        let chunk = rest[..n].to_vec();
        glue.response_offset += n;
        let left = glue.response.len() - glue.response_offset;
        let sw = if left == 0 {
            SW_OK
        } else {
            0x6100 | left.min(0xFF) as u16
        };
        (chunk, sw)
    }

    /// Applies the YubiKey fixes, forwarding everything else to piv-authenticator.
    fn dispatch(&mut self, command: &Command<BUF_LEN>) -> Result<Vec<u8>, u16> {
        let ins = u8::from(command.instruction());
        let (p1, p2) = (command.p1, command.p2);
        let data: &[u8] = command.data();
        match (ins, p1, p2) {
            (0xFD, _, _) => Ok(self.glue.firmware.to_vec()),
            (0xF8, _, _) => Ok(self.glue.serial.to_be_bytes().to_vec()),
            (0xF7, 0x00, slot) => self.metadata(slot),
            (0xF9, slot, 0x00) => {
                // ATTEST: only keys generated on the card (a YubiKey refuses imported ones).
                let glue = &mut *self.glue;
                let key = glue.keys.slots.get(&slot).ok_or(SW_WRONG_DATA)?;
                glue.attestor
                    .attest(slot, key, glue.serial, glue.firmware, &mut glue.seeds)
            }
            (0x20, 0x00, 0x80) if !data.is_empty() => {
                let result = self.forward(command);
                self.pin_verified = result.is_ok();
                self.pin_fresh = result.is_ok();
                result
            }
            (0x20, 0xFF, 0x80) => {
                self.pin_verified = false;
                self.pin_fresh = false;
                self.forward(command)
            }
            (0x47, 0x00, slot) => {
                // GENERATE: learn the slot's public key and policies from the answer.
                let result = self.forward(command);
                if let Ok(response) = &result {
                    self.glue.keys.generated(slot, data, response);
                    self.glue.save();
                }
                result
            }
            (0xFE, yubico::ALG_P256 | yubico::ALG_P384, slot) => {
                // IMPORT of an EC key: kept by the glue, which then signs with it.
                if !is_key_slot(slot) {
                    return Err(SW_WRONG_DATA);
                }
                self.forward_parts(0x00, 0xDB, 0x3F, 0xFF, &ADMIN_PROBE)?;
                self.glue.keys.import_ec(p1, slot, data)?;
                self.glue.save();
                Ok(Vec::new())
            }
            (0x87, alg, slot) if self.glue_holds(slot) => self.glue_sign(alg, slot, data),
            (0xFF, 0xFF, 0xFE | 0xFF) => {
                // SET MANAGEMENT KEY: note whether it is the default.
                let result = self.forward(command);
                if result.is_ok() {
                    self.glue.keys.mgm_set(data);
                    self.glue.save();
                }
                result
            }
            (0xA4, 0x04, 0x00) => {
                // The yubikey crate selects the 5-byte RID only.
                let aid =
                    if data.len() >= 5 && data.len() < PIV_AID.len() && PIV_AID.starts_with(data) {
                        &PIV_AID[..]
                    } else {
                        data
                    };
                let result = self.forward_parts(0x00, 0xA4, 0x04, 0x00, aid);
                if result.is_ok() {
                    // Selecting the applet resets its security status (PIN, management key).
                    self.glue.restart = true;
                }
                result
            }
            (0xCB, 0x3F, 0xFF) => match glue_object(data) {
                Some(id) => {
                    if id == PRINTED_INFORMATION {
                        // Readable only after PIN verification; piv-authenticator knows that.
                        if let Err(SW_SECURITY) = self.forward(command) {
                            return Err(SW_SECURITY);
                        }
                    }
                    self.glue.objects.get(&id).cloned().ok_or(SW_NOT_FOUND)
                }
                None => self.forward(command),
            },
            (0xDB, 0x3F, 0xFF) => match glue_object(data) {
                Some(id) => {
                    self.forward_parts(0x00, 0xDB, 0x3F, 0xFF, &ADMIN_PROBE)?;
                    let value = &data[5..];
                    if value.is_empty() || value == [0x53, 0x00] {
                        self.glue.objects.remove(&id);
                    } else {
                        self.glue.objects.insert(id, value.to_vec());
                    }
                    self.glue.save();
                    Ok(Vec::new())
                }
                None => self.forward(command),
            },
            (0x24, 0x00, 0x80) => {
                // CHANGE PIN: piv-authenticator says 6300 for a wrong old PIN; a YubiKey 63Cx.
                let result = self.forward(command);
                if result.is_ok() {
                    self.glue.keys.pin_changed(data);
                    self.glue.save();
                }
                match result {
                    Err(SW_VERIFY_FAILED) => {
                        let _ = self.forward_parts(0x00, 0x20, 0xFF, 0x80, &[]);
                        match self.forward_parts(0x00, 0x20, 0x00, 0x80, &[]) {
                            Err(sw) if sw & 0xFFF0 == 0x63C0 => Err(sw),
                            _ => Err(0x63C0),
                        }
                    }
                    other => other,
                }
            }
            (0x24, 0x00, 0x81) => {
                // CHANGE PUK: mirror the PUK retry counter piv-authenticator does not report.
                match self.forward(command) {
                    Ok(response) => {
                        self.glue.keys.puk_changed(data);
                        self.glue.set_puk_tries(PUK_RETRIES);
                        Ok(response)
                    }
                    Err(SW_VERIFY_FAILED) => {
                        let tries = self.glue.puk_tries.saturating_sub(1);
                        self.glue.set_puk_tries(tries);
                        Err(0x63C0 | u16::from(tries))
                    }
                    Err(sw) => Err(sw),
                }
            }
            (0x2C, 0x00, 0x80) => {
                // RESET RETRY COUNTER (unblock PIN with the PUK).
                let result = self.forward(command);
                match result {
                    Ok(_) => {
                        self.glue.keys.pin_changed(data);
                        self.glue.set_puk_tries(PUK_RETRIES);
                    }
                    Err(sw) if sw & 0xFFF0 == 0x63C0 => self.glue.set_puk_tries((sw & 0x0F) as u8),
                    Err(SW_VERIFY_FAILED) => {
                        let tries = self.glue.puk_tries.saturating_sub(1);
                        self.glue.set_puk_tries(tries);
                        return Err(0x63C0 | u16::from(tries));
                    }
                    Err(_) => {}
                }
                result
            }
            (0xFE, 0x05 | 0x07 | 0x16, _) => {
                // IMPORT of an RSA key: Yubico sends p, q, dp, dq, qinv (tags 01..05);
                // piv-authenticator wants p, q, e (tags 01..03) and panics on anything else.
                let translated = yubico_rsa_import_to_piv(data).ok_or(SW_WRONG_DATA)?;
                let result = self.forward_parts(0x00, 0xFE, p1, p2, &translated)?;
                if let Some((_, p, rest)) = take_tlv2(&translated) {
                    if let Some((_, q, rest)) = take_tlv2(rest) {
                        if let Some((_, e, _)) = take_tlv2(rest) {
                            self.glue.keys.imported_rsa(p2, p, q, e, data);
                            self.glue.save();
                        }
                    }
                }
                Ok(result)
            }
            (0xFB, _, _) => {
                // Yubico RESET: also forget what the glue stores and start a fresh session.
                let result = self.forward(command);
                if result.is_ok() {
                    // The attestation key and certificate survive a reset, as on a YubiKey.
                    let f9 = self.glue.objects.remove(&ATTESTATION_OBJECT);
                    self.glue.objects.clear();
                    self.glue
                        .objects
                        .extend(f9.map(|o| (ATTESTATION_OBJECT, o)));
                    self.glue.keys = Keys::default();
                    self.glue.puk_tries = PUK_RETRIES;
                    self.glue.save();
                    self.glue.restart = true;
                }
                result
            }
            _ => self.forward(command),
        }
    }

    /// GET METADATA (firmware 5.3 and later).
    fn metadata(&mut self, slot: u8) -> Result<Vec<u8>, u16> {
        if self.glue.firmware < METADATA_SINCE {
            return Err(SW_INS_NOT_SUPPORTED);
        }
        match slot {
            0x80 => {
                // VERIFY without data asks piv-authenticator for the PIN's tries left.
                let left = match self.forward_parts(0x00, 0x20, 0x00, 0x80, &[]) {
                    Ok(_) => yubico::PIN_RETRIES,
                    Err(sw) if sw & 0xFFF0 == 0x63C0 => (sw & 0x0F) as u8,
                    Err(SW_PIN_BLOCKED) => 0,
                    Err(sw) => return Err(sw),
                };
                Ok(yubico::pin_metadata(
                    self.glue.keys.pin_default,
                    yubico::PIN_RETRIES,
                    left,
                ))
            }
            0x81 => Ok(yubico::pin_metadata(
                self.glue.keys.puk_default,
                PUK_RETRIES,
                self.glue.puk_tries,
            )),
            0x9B | 0xF9 => self.glue.keys.metadata(slot, Some(&self.glue.attestor)),
            s if is_key_slot(s) => self.glue.keys.metadata(slot, None),
            _ => Err(SW_WRONG_DATA),
        }
    }

    fn glue_holds(&self, slot: u8) -> bool {
        self.glue
            .keys
            .slots
            .get(&slot)
            .is_some_and(|k| k.held_by_glue())
    }

    /// GENERAL AUTHENTICATE with a key the glue imported, under the slot's PIN policy.
    fn glue_sign(&mut self, alg: u8, slot: u8, data: &[u8]) -> Result<Vec<u8>, u16> {
        let policy = self
            .glue
            .keys
            .slots
            .get(&slot)
            .map(|k| k.pin_policy())
            .ok_or(SW_NOT_FOUND)?;
        let allowed = match policy {
            1 => true,                                // never
            2 => self.pin_verified,                   // once
            _ => self.pin_verified && self.pin_fresh, // always: a VERIFY right before
        };
        if !allowed {
            return Err(SW_SECURITY);
        }
        let result = self.glue.keys.sign(alg, slot, data);
        if result.is_ok() && policy == 3 {
            self.pin_fresh = false;
        }
        result
    }

    fn forward_parts(
        &mut self,
        cla: u8,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
    ) -> Result<Vec<u8>, u16> {
        let mut apdu = vec![cla, ins, p1, p2];
        match data.len() {
            0 => {}
            n @ 1..=255 => apdu.push(n as u8),
            n => {
                let n = u16::try_from(n).map_err(|_| SW_WRONG_LENGTH)?;
                apdu.push(0);
                apdu.extend_from_slice(&n.to_be_bytes());
            }
        }
        apdu.extend_from_slice(data);
        let command: Command<BUF_LEN> = Command::try_from(&apdu).map_err(parse_error)?;
        self.forward(&command)
    }

    fn forward(&mut self, command: &Command<BUF_LEN>) -> Result<Vec<u8>, u16> {
        let mut reply = heapless::Vec::<u8, BUF_LEN>::new();
        let app = &mut self.app;
        // piv-authenticator panics on some unexpected inputs (its syscalls expect success);
        // answer 6F00 and start a fresh session instead of losing the card.
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            app.respond(command.as_view(), reply.as_mut_view())
        }));
        match result {
            Ok(Ok(())) => Ok(reply.to_vec()),
            Ok(Err(status)) => Err(status_word(status)),
            Err(_) => {
                eprintln!(
                    "virtual-piv-card[{}]: piv-authenticator panicked; session restarted",
                    self.glue.serial
                );
                self.glue.restart = true;
                Err(SW_NO_PRECISE_DIAGNOSIS)
            }
        }
    }
}

impl<T: Client> vpicc::VSmartCard for Card<'_, T> {
    fn atr(&self) -> &[u8] {
        YUBIKEY_ATR
    }

    fn power_on(&mut self) {
        if !self.glue.announced {
            // scripts/virtual-piv waits for this line: pcscd has seen the card.
            eprintln!(
                "virtual-piv-card: serial {}: powered on by pcscd",
                self.glue.serial
            );
            self.glue.announced = true;
        }
        self.glue.restart = true;
    }

    fn power_off(&mut self) {
        self.glue.restart = true;
    }

    fn reset(&mut self) {
        self.glue.restart = true;
    }

    fn execute(&mut self, apdu: &[u8]) -> Vec<u8> {
        let (mut data, sw) = self.handle(apdu);
        if self.glue.verbose {
            // Headers and status only: data fields can carry PINs and keys.
            let header: Vec<String> = apdu.iter().take(4).map(|b| format!("{b:02X}")).collect();
            eprintln!(
                "virtual-piv-card[{}]: {} ({} bytes) -> {sw:04X} ({} bytes)",
                self.glue.serial,
                header.join(" "),
                apdu.len(),
                data.len()
            );
        }
        data.extend_from_slice(&sw.to_be_bytes());
        data
    }
}

/// The slots that hold asymmetric keys: 9a, 9c, 9d, 9e and the retired 82..95.
fn is_key_slot(slot: u8) -> bool {
    matches!(slot, 0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95)
}

/// The object id of a GET/PUT DATA naming one of [`GLUE_OBJECTS`].
fn glue_object(data: &[u8]) -> Option<[u8; 3]> {
    match data {
        [0x5C, 0x03, a, b, c, ..] => {
            let id = [*a, *b, *c];
            GLUE_OBJECTS.contains(&id).then_some(id)
        }
        _ => None,
    }
}

/// Rewrites a Yubico RSA import (01 p, 02 q, 03 dp, 04 dq, 05 qinv, optional policies)
/// into piv-authenticator's form (01 p, 02 q, 03 e), with e = dp^-1 mod (p - 1).
fn yubico_rsa_import_to_piv(data: &[u8]) -> Option<Vec<u8>> {
    use num_bigint_dig::{BigUint, ModInverse as _};
    let (mut p, mut q, mut dp) = (None, None, None);
    let mut rest = data;
    while !rest.is_empty() {
        let (tag, value, tail) = take_tlv2(rest)?;
        match tag {
            0x01 => p = Some(value),
            0x02 => q = Some(value),
            0x03 => dp = Some(value),
            _ => {}
        }
        rest = tail;
    }
    let (p, q, dp) = (p?, q?, dp?);
    let p_minus_1 = BigUint::from_bytes_be(p) - 1u32;
    let e = BigUint::from_bytes_be(dp)
        .mod_inverse(&p_minus_1)?
        .to_biguint()?;
    let mut out = Vec::with_capacity(data.len());
    put_tlv(&mut out, 0x01, p);
    put_tlv(&mut out, 0x02, q);
    put_tlv(&mut out, 0x03, &e.to_bytes_be());
    Some(out)
}

fn status_word(status: Status) -> u16 {
    match status {
        Status::InstructionNotSupportedOrInvalid => SW_INS_NOT_SUPPORTED,
        other => other.to_u16(),
    }
}

fn parse_error(e: FromSliceError) -> u16 {
    let status = match e {
        FromSliceError::InvalidSliceLength | FromSliceError::TooShort | FromSliceError::TooLong => {
            Status::WrongLength
        }
        FromSliceError::InvalidClass => Status::ClassNotSupported,
        FromSliceError::InvalidFirstBodyByteForExtended => Status::UnspecifiedCheckingError,
    };
    status.to_u16()
}
