//! Keys to actions, and the table `?` shows. One place, so help and behaviour agree.

use crate::tui::action::{Action, InputKey};
use crate::tui::job::PivOp;
use crate::tui::state::{State, Tab};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Bindings every screen has.
pub const GLOBAL: &[(&str, &str)] = &[
    ("1-5, Tab", "switch screen (Shift-Tab back)"),
    ("j/k, ↓/↑", "move"),
    ("PgDn/PgUp", "page down / up"),
    ("Home/End, G", "first / last"),
    ("r", "refresh"),
    ("x", "cancel the running job"),
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
];

/// Bindings of one screen.
pub fn screen(tab: Tab) -> &'static [(&'static str, &'static str)] {
    match tab {
        Tab::Tokens => &[
            ("i", "initialise a SoftHSM2 / PKCS#11 token"),
            ("c", "YubiKey: change the PIN"),
            ("C", "YubiKey: change the PUK"),
            ("u", "YubiKey: unblock the PIN (PUK)"),
            ("m", "YubiKey: new management key"),
            ("n", "YubiKey: PIN/PUK retry counts"),
            ("X", "YubiKey: reset PIV (asks first)"),
        ],
        Tab::Keys => &[
            ("g", "generate a key or a version"),
            ("a", "activate the version"),
            ("e", "export its public key"),
            ("s", "sign a file with it"),
            ("t", "suspend, compromise… (state)"),
            ("R", "rotate, with an overlap"),
            ("p", "set the rotation policy"),
            ("d", "deactivate ended overlaps"),
            ("S", "re-sign older images"),
            ("b", "export a distribution bundle"),
            ("A", "YubiKey: check its attestation"),
            ("D", "destroy its private key"),
        ],
        Tab::Images => &[
            ("s", "sign image references with a key"),
            ("v", "verify an image"),
        ],
        Tab::Ceremony => &[
            ("o", "start a ceremony"),
            ("O", "resume one (progress.json)"),
            ("a", "acknowledge the current step"),
            ("n", "run the current step (asks first)"),
            ("f", "finish: sign the transcript"),
        ],
        Tab::Audit => &[
            ("/", "search"),
            ("f", "filter by key, actor, event, outcome"),
            ("c", "clear filter and search"),
            ("v", "verify the chain again"),
        ],
    }
}

/// In modals and forms.
pub const MODAL: &[(&str, &str)] = &[
    ("Tab/↓, Shift-Tab/↑", "next / previous field"),
    ("←/→, Space", "change a choice"),
    ("Enter", "submit"),
    ("Esc", "cancel"),
];

/// The action for a key press, given what is on screen.
pub fn map_key(state: &State, key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c')) {
        return Some(Action::Quit);
    }
    if state.modal().is_some() {
        let k = match key.code {
            KeyCode::Char(c) if !ctrl => InputKey::Char(c),
            KeyCode::Backspace => InputKey::Backspace,
            KeyCode::Enter => InputKey::Enter,
            KeyCode::Esc => InputKey::Esc,
            KeyCode::Tab => InputKey::Tab,
            KeyCode::BackTab => InputKey::BackTab,
            KeyCode::Left => InputKey::Left,
            KeyCode::Right => InputKey::Right,
            KeyCode::Up => InputKey::Up,
            KeyCode::Down => InputKey::Down,
            _ => return None,
        };
        return Some(Action::Input(k));
    }
    if ctrl {
        return match key.code {
            KeyCode::Char('d') => Some(Action::PageDown),
            KeyCode::Char('u') => Some(Action::PageUp),
            KeyCode::Char('l') => Some(Action::Refresh),
            _ => None,
        };
    }
    let global = match key.code {
        KeyCode::Char('q') => Some(Action::Quit),
        KeyCode::Char('?') => Some(Action::Help),
        KeyCode::Char(c @ '1'..='5') => Some(Action::SelectTab(Tab::from_index(
            (c as usize) - ('1' as usize),
        ))),
        KeyCode::Tab => Some(Action::NextTab),
        KeyCode::BackTab => Some(Action::PrevTab),
        KeyCode::Char('j') | KeyCode::Down => Some(Action::Down),
        KeyCode::Char('k') | KeyCode::Up => Some(Action::Up),
        KeyCode::PageDown => Some(Action::PageDown),
        KeyCode::PageUp => Some(Action::PageUp),
        KeyCode::Home => Some(Action::Top),
        KeyCode::End | KeyCode::Char('G') => Some(Action::Bottom),
        KeyCode::Char('r') => Some(Action::Refresh),
        KeyCode::Char('x') => Some(Action::CancelJob),
        _ => None,
    };
    if global.is_some() {
        return global;
    }
    match (state.tab, key.code) {
        (Tab::Tokens, KeyCode::Char('i')) => Some(Action::OpenInitToken),
        (Tab::Tokens, KeyCode::Char('c')) => Some(Action::PivAdmin(PivOp::ChangePin)),
        (Tab::Tokens, KeyCode::Char('C')) => Some(Action::PivAdmin(PivOp::ChangePuk)),
        (Tab::Tokens, KeyCode::Char('u')) => Some(Action::PivAdmin(PivOp::UnblockPin)),
        (Tab::Tokens, KeyCode::Char('m')) => Some(Action::PivAdmin(PivOp::SetManagementKey)),
        (Tab::Tokens, KeyCode::Char('n')) => Some(Action::OpenPivRetries),
        (Tab::Tokens, KeyCode::Char('X')) => Some(Action::PivAdmin(PivOp::Reset)),
        (Tab::Keys, KeyCode::Char('A')) => Some(Action::AttestSelected),
        (Tab::Keys, KeyCode::Char('g')) => Some(Action::OpenGenerate),
        (Tab::Keys, KeyCode::Char('a')) => Some(Action::ActivateSelected),
        (Tab::Keys, KeyCode::Char('e')) => Some(Action::OpenExport),
        (Tab::Keys, KeyCode::Char('s')) => Some(Action::OpenSignFile),
        (Tab::Keys, KeyCode::Char('D')) => Some(Action::DestroySelected),
        (Tab::Keys, KeyCode::Char('t')) => Some(Action::OpenStateChange),
        (Tab::Keys, KeyCode::Char('R')) => Some(Action::OpenRotate),
        (Tab::Keys, KeyCode::Char('p')) => Some(Action::OpenPolicy),
        (Tab::Keys, KeyCode::Char('d')) => Some(Action::ApplyDue),
        (Tab::Keys, KeyCode::Char('S')) => Some(Action::OpenResign),
        (Tab::Keys, KeyCode::Char('b')) => Some(Action::OpenBundleExport),
        (Tab::Images, KeyCode::Char('s')) => Some(Action::OpenSignImages),
        (Tab::Images, KeyCode::Char('v')) => Some(Action::OpenVerifyImage),
        (Tab::Ceremony, KeyCode::Char('o')) => Some(Action::OpenCeremonyStart),
        (Tab::Ceremony, KeyCode::Char('O')) => Some(Action::OpenCeremonyResume),
        (Tab::Ceremony, KeyCode::Char('a')) => Some(Action::OpenCeremonyAck),
        (Tab::Ceremony, KeyCode::Char('n')) => Some(Action::RunCeremonyStep),
        (Tab::Ceremony, KeyCode::Char('f')) => Some(Action::FinishCeremony),
        (Tab::Audit, KeyCode::Char('/')) => Some(Action::OpenSearch),
        (Tab::Audit, KeyCode::Char('f')) => Some(Action::OpenFilter),
        (Tab::Audit, KeyCode::Char('c')) => Some(Action::ClearFilter),
        (Tab::Audit, KeyCode::Char('v')) => Some(Action::VerifyAudit),
        // `g` generates from anywhere: it is the first thing a new user wants.
        (_, KeyCode::Char('g')) => Some(Action::OpenGenerate),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(state: &State, c: char) -> Option<Action> {
        map_key(state, KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    #[test]
    fn every_single_key_in_the_help_does_something() {
        let mut s = State::new("/h".into(), (80, 24), 0);
        for tab in Tab::ALL {
            s.tab = tab;
            for (keys, what) in screen(tab) {
                let c = keys.chars().next().unwrap();
                assert!(
                    press(&s, c).is_some(),
                    "{tab:?}: {keys} ({what}) is not bound"
                );
            }
        }
        for c in ['q', '?', '1', '4', 'j', 'k', 'r', 'x', 'G'] {
            assert!(press(&s, c).is_some(), "{c} is not bound");
        }
    }

    #[test]
    fn a_modal_takes_every_printable_key() {
        let mut s = State::new("/h".into(), (80, 24), 0);
        s.modals.push(crate::tui::state::Modal::Help);
        assert!(matches!(
            press(&s, 'q'),
            Some(Action::Input(InputKey::Char('q')))
        ));
    }
}
