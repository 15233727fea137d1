//! Lines that mail and phone apps append to a message ("Sent from my
//! iPhone", "Get Outlook for Android", "Enviado desde mi Samsung Galaxy").
//! The customer did not write them, and they hold words that read like a
//! name or a number ("Galaxy S21", "BlackBerry 10"), so the extractor reads
//! a message with them blanked out.

use std::sync::LazyLock;

use regex::Regex;

/// A whole line an app appended, in the languages the extractor reads.
static APP_SIGNATURE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?im)^[ \t]*(?:-{2,}[ \t]*)?(?:",
        r"sent\s+(?:from|via|with|using)\s+(?:my\s+)?|",
        r"get\s+(?:outlook|gmail)\s+for\s+|",
        r"enviado\s+(?:desde|do|de|pelo|por)\s+(?:mi|meu|o|el)?\s*|",
        r"envoy[ée]\s+(?:de|depuis)\s+(?:mon|ma)?\s*|",
        r"von\s+(?:meinem|meiner)\s+.{1,60}?gesendet|gesendet\s+von\s+|",
        r"inviato\s+da\s+(?:il\s+mio|mio)?\s*|",
        r"verzonden\s+(?:vanaf|met|via)\s+(?:mijn)?\s*|",
        r"dikirim\s+dari\s+|",
        r"отправлено\s+(?:с|из)\s+|",
        r"iPhone(?:から|より)送信|",
        r"发自我的|",
        r"(?:my\s+)?iphone(?:\s+\S+)?\s*에서\s*보냄",
        r")[^\n]{0,80}$"
    ))
    .expect("valid regex")
});

/// `text` with every app-appended line replaced by spaces of the same byte
/// length, so byte offsets (and so quotes) stay those of the original.
pub fn blank_app_signatures(text: &str) -> std::borrow::Cow<'_, str> {
    if !APP_SIGNATURE.is_match(text) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut blanked = String::with_capacity(text.len());
    let mut last = 0;
    for m in APP_SIGNATURE.find_iter(text) {
        blanked.push_str(&text[last..m.start()]);
        blanked.extend(std::iter::repeat_n(' ', m.len()));
        last = m.end();
    }
    blanked.push_str(&text[last..]);
    std::borrow::Cow::Owned(blanked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_lines_are_blanked_and_offsets_kept() {
        for text in [
            "Can you send me the spec sheet?\n\nSent from my iPhone",
            "ok\n\nSent from my Samsung Galaxy smartphone.",
            "hi\n\nGet Outlook for Android",
            "¿Tienen talla 42?\n\nEnviado desde mi iPhone",
            "Paket?\n\nVon meinem iPhone gesendet",
            "Merci\n\nEnvoyé de mon iPad",
            "any update?\n\nSent from Yahoo Mail on Android",
            "Obrigado\n\nEnviado do meu iPhone",
            "ok thanks\n\nSent from my Huawei phone",
            "confirm\n\nSent from my BlackBerry 10 smartphone on the Vodafone network.",
        ] {
            let blanked = blank_app_signatures(text);
            assert_eq!(blanked.len(), text.len(), "{text}");
            let last_line = blanked.lines().last().unwrap_or_default();
            assert!(last_line.trim().is_empty(), "{text:?} -> {blanked:?}");
        }
    }

    #[test]
    fn the_customers_own_words_stay() {
        let text = "I sent it from my phone yesterday, Carla";
        assert_eq!(blank_app_signatures(text), text);
        let text = "I'm Carla, please call me back\n\nSent from my iPhone";
        assert!(blank_app_signatures(text).starts_with("I'm Carla, please call me back"));
    }
}
