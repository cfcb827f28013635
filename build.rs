//! Turns on the real-YubiKey test suite (tests/piv_hardware.rs) only when
//! KEYWARD_TEST_YUBIKEY_SERIAL names an inserted card, so CI never counts a test that cannot
//! run here. See docs/HARDWARE-TESTING.md.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(keyward_yubikey_hw)");
    println!("cargo::rerun-if-env-changed=KEYWARD_TEST_YUBIKEY_SERIAL");
    if std::env::var_os("KEYWARD_TEST_YUBIKEY_SERIAL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=keyward_yubikey_hw");
    }
}
