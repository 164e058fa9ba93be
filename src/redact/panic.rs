//! The panic hook: the default hook prints the raw panic message, which may hold card data.

use std::borrow::Cow;
use std::io::{self, Write};
use std::panic::Location;

use super::scan::scrub;

/// Installs a panic hook that formats the panic like the default hook (thread, location,
/// message, backtrace when enabled), scrubs it, and writes it to stderr. Replaces the default
/// hook, which would print the raw message.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = format_panic(info);
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }));
}

/// The scrubbed text the panic hook writes for `info`.
fn format_panic(info: &std::panic::PanicHookInfo<'_>) -> String {
    let thread = std::thread::current();
    let message = panic_message(info.payload());
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => Some(backtrace.to_string()),
        _ => None,
    };
    render_panic(
        thread.name().unwrap_or("<unnamed>"),
        info.location(),
        message,
        backtrace.as_deref(),
    )
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any>"
    }
}

fn render_panic(
    thread: &str,
    location: Option<&Location<'_>>,
    message: &str,
    backtrace: Option<&str>,
) -> String {
    let mut text = match location {
        Some(loc) => format!("thread '{thread}' panicked at {loc}:\n{message}\n"),
        None => format!("thread '{thread}' panicked:\n{message}\n"),
    };
    match backtrace {
        Some(bt) => {
            text.push_str("stack backtrace:\n");
            text.push_str(bt);
            if !bt.ends_with('\n') {
                text.push('\n');
            }
        }
        None => text.push_str(
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
        ),
    }
    match scrub(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(scrubbed) => scrubbed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, PoisonError};

    #[test]
    fn panic_text_is_scrubbed() {
        let text = render_panic(
            "worker-1",
            Some(Location::caller()),
            r#"bad body {"number":"4111 1111 1111 1111","cvv":"123"}"#,
            None,
        );
        assert!(text.starts_with("thread 'worker-1' panicked at "), "{text}");
        assert!(text.contains(file!()), "{text}");
        assert!(
            text.contains(r#"bad body {"number":"[PAN ****1111]","cvv":"[REDACTED]"}"#),
            "{text}"
        );
        assert!(!text.contains("123\""), "{text}");
        let with_bt = render_panic("main", None, "card 5555555555554444", Some("0: frame"));
        assert_eq!(
            with_bt,
            "thread 'main' panicked:\ncard [PAN ****4444]\nstack backtrace:\n0: frame\n"
        );
    }

    #[test]
    fn panic_payloads() {
        let s: Box<dyn std::any::Any + Send> = Box::new("static");
        assert_eq!(panic_message(&*s), "static");
        let s: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(&*s), "owned");
        let s: Box<dyn std::any::Any + Send> = Box::new(42u8);
        assert_eq!(panic_message(&*s), "Box<dyn Any>");
    }

    #[test]
    fn format_panic_from_a_real_panic() {
        // The hook is process-wide: install a recording one briefly, then put the old one back.
        static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| {
            SEEN.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format_panic(info));
        }));
        let result = std::thread::Builder::new()
            .name("canary-panic".into())
            .spawn(|| panic!("charging card {} failed", "4111111111111111"))
            .unwrap()
            .join();
        std::panic::set_hook(previous);
        assert!(result.is_err());
        let seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
        let text = seen
            .iter()
            .find(|t| t.contains("'canary-panic'"))
            .expect("hook saw the panic");
        assert!(
            text.contains("charging card [PAN ****1111] failed"),
            "{text}"
        );
        assert!(!text.contains("4111111111111111"), "{text}");
    }
}
