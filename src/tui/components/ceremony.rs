//! Ceremony: the shipped ceremony scripts, or the ceremony being run — its steps with their
//! state on the left; the current step on the right: what to do, the checklist, who must
//! acknowledge it and who has, and the error that stopped it.

use super::{col, fit};
use crate::ceremony::{Status, StepStatus};
use crate::tui::state::State;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

/// Steps, the current step.
pub fn areas(body: Rect) -> [Rect; 2] {
    if body.width >= 110 {
        Layout::horizontal([Constraint::Percentage(38), Constraint::Percentage(62)]).areas(body)
    } else {
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body)
    }
}

pub fn render(frame: &mut Frame, body: Rect, state: &State, theme: &Theme) {
    let [list, detail] = areas(body);
    let view = &state.ceremony;
    let Some(c) = &view.ceremony else {
        let block = Block::bordered()
            .title(Span::styled(" Ceremonies ", theme.title()))
            .title_bottom(Span::styled(
                " o start a ceremony · O resume one (progress.json) ",
                theme.dim(),
            ))
            .border_style(theme.border());
        let inner = block.inner(list);
        frame.render_widget(block, list);
        let w = inner.width as usize;
        let mut lines = vec![Line::from(Span::styled(
            fit(&format!("{}SUMMARY", col("SCRIPT", 15)), w),
            theme.header(),
        ))];
        for (i, (name, summary)) in view.scripts.iter().enumerate() {
            let mut l = Line::from(vec![
                Span::styled(col(name, 15), theme.key()),
                Span::raw(fit(summary, w.saturating_sub(15))),
            ]);
            if i == view.cursor.selected {
                l = l.style(theme.selected());
            }
            lines.push(l);
        }
        frame.render_widget(Paragraph::new(lines), inner);
        let block = Block::bordered()
            .title(Span::styled(" How a ceremony runs ", theme.title()))
            .border_style(theme.border());
        let inner = block.inner(detail);
        frame.render_widget(block, detail);
        let text = vec![
            Line::from("A ceremony is a script of steps with roles: an administrator, custodians and witnesses."),
            Line::from(""),
            Line::from("Each step shows what to do and a checklist; the people it names acknowledge it by typing their own name (a); then the step runs (n). A step that fails stops the ceremony with its state saved in DIR/progress.json: fix the cause, acknowledge and run it again, now or later (O resumes)."),
            Line::from(""),
            Line::from("When every step is done, f signs the transcript (DIR/transcript.json and .md) and chains its hash into the audit log; `keyward ceremony verify` checks it."),
            Line::from(""),
            Line::from(Span::styled(
                "Participants come from a TOML file (names, custodians' age recipients): see docs/guides/custodian.md.",
                theme.dim(),
            )),
        ];
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), inner);
        return;
    };

    let steps = c.steps();
    let status = c.status();
    let title = format!(
        " {} — {} ",
        c.progress().ceremony,
        match &status {
            Status::Next { index } => format!("step {} of {}", index + 1, steps.len()),
            Status::ReadyToFinish => "every step done: f signs the transcript".into(),
            Status::Completed(_) => "completed".into(),
        }
    );
    let block = Block::bordered()
        .title(Span::styled(title, theme.title()))
        .title_bottom(Span::styled(
            " a acknowledge · n run the step · f finish · O open another ",
            theme.dim(),
        ))
        .border_style(theme.border());
    let inner = block.inner(list);
    frame.render_widget(block, list);
    let w = inner.width as usize;
    let current = c.current_index();
    let mut lines = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let (mark, style) = match s.status {
            StepStatus::Done => ("✔", theme.ok()),
            StepStatus::Failed => ("✘", theme.bad()),
            StepStatus::Running => ("…", theme.warn()),
            StepStatus::Pending if Some(i) == current => ("›", theme.key()),
            StepStatus::Pending => (" ", theme.dim()),
        };
        let mut l = Line::from(vec![
            Span::styled(format!("{mark} {:>2}. ", s.number), style),
            Span::raw(fit(&s.title, w.saturating_sub(6))),
        ]);
        if i == view.cursor.selected {
            l = l.style(theme.selected());
        }
        lines.push(l);
    }
    frame.render_widget(Paragraph::new(lines), inner);

    // The selected step (the current one unless the person moved).
    let Some(s) = steps
        .get(view.cursor.selected)
        .or(current.and_then(|i| steps.get(i)))
    else {
        return;
    };
    let block = Block::bordered()
        .title(Span::styled(
            format!(" Step {}/{}: {} ", s.number, s.total, s.title),
            theme.title(),
        ))
        .border_style(theme.border());
    let inner = block.inner(detail);
    frame.render_widget(block, detail);
    let mut text = vec![Line::from(vec![
        Span::styled("status  ", theme.dim()),
        Span::styled(
            match s.status {
                StepStatus::Done => "done".to_string(),
                StepStatus::Failed => format!("FAILED (attempt {})", s.attempts),
                StepStatus::Running => "started, not finished (interrupted?)".into(),
                StepStatus::Pending if Some(s.number - 1) == current => {
                    "next: acknowledge, then run".into()
                }
                StepStatus::Pending => "pending".into(),
            },
            match s.status {
                StepStatus::Done => theme.ok(),
                StepStatus::Failed => theme.bad(),
                _ => theme.base(),
            },
        ),
    ])];
    if let Some(e) = &s.last_error {
        text.push(Line::from(vec![
            Span::styled("error   ", theme.dim()),
            Span::styled(e.clone(), theme.bad()),
        ]));
    }
    text.push(Line::from(""));
    for l in s.instructions.trim().lines() {
        text.push(Line::from(l.to_owned()));
    }
    if !s.checklist.is_empty() {
        text.push(Line::from(""));
        text.push(Line::from(Span::styled("checklist", theme.header())));
        for item in &s.checklist {
            text.push(Line::from(format!("  ☐ {item}")));
        }
    }
    text.push(Line::from(""));
    text.push(Line::from(Span::styled("acknowledged by", theme.header())));
    for (person, role) in &s.required {
        let ack = s.acknowledged.iter().find(|a| a.person == *person);
        text.push(Line::from(match ack {
            Some(a) => Span::styled(format!("  ✔ {person} ({role}) at {}", a.time), theme.ok()),
            None if s.status == StepStatus::Done => {
                Span::styled(format!("  ✔ {person} ({role})"), theme.ok())
            }
            None => Span::styled(format!("  ☐ {person} ({role}) — press a"), theme.warn()),
        }));
    }
    if !s.outputs.is_empty() {
        text.push(Line::from(""));
        text.push(Line::from(Span::styled("produced", theme.header())));
        for (k, v) in &s.outputs {
            text.push(Line::from(format!("  {k:<14} {v}")));
        }
    }
    if let Status::Completed(f) = &status {
        text.push(Line::from(""));
        text.push(Line::from(Span::styled(
            format!(
                "transcript {} (sha256 {})",
                f.transcript.display(),
                fit(&f.sha256, 16)
            ),
            theme.ok(),
        )));
    }
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), inner);
}
