//! The customer's language, guessed from their words, and default questions
//! in it. Used to phrase asks when no model wrote the question; never stored
//! as a profile fact, since the customer did not state it.

use crate::fields::FieldSet;

const MARKERS: &[(&str, &[&str])] = &[
    (
        "es",
        &[
            "hola",
            "gracias",
            "quiero",
            "necesito",
            "por favor",
            "mi ",
            "tengo",
            "puedo",
            "cuánto",
            "¿",
            "envíame",
            "llamo",
        ],
    ),
    (
        "pt",
        &[
            "olá", "obrigad", "quero", "preciso", "você", "meu ", "minha", "não", "pedido",
            "tenho", "chamo",
        ],
    ),
    (
        "fr",
        &[
            "bonjour",
            "merci",
            "je ",
            "voudrais",
            "s'il vous",
            "mon ",
            "appelle",
            "est-ce",
        ],
    ),
    (
        "de",
        &[
            "hallo", "danke", "ich ", "möchte", "bitte", "mein", "heiße", "können",
        ],
    ),
    (
        "id",
        &[
            "halo",
            "terima kasih",
            "saya",
            "mau",
            "bisa",
            "tolong",
            "nama",
            "apakah",
        ],
    ),
    (
        "it",
        &["ciao", "grazie", "vorrei", "mio ", "sono ", "per favore"],
    ),
];

/// ISO 639-1 code of the text's language; `en` when nothing else stands out.
pub fn detect(text: &str) -> &'static str {
    if text.chars().any(|c| ('\u{0E00}'..='\u{0E7F}').contains(&c)) {
        return "th";
    }
    if text.chars().any(|c| ('\u{3040}'..='\u{30FF}').contains(&c)) {
        return "ja";
    }
    if text.chars().any(|c| ('\u{AC00}'..='\u{D7AF}').contains(&c)) {
        return "ko";
    }
    if text.chars().any(|c| ('\u{4E00}'..='\u{9FFF}').contains(&c)) {
        return "zh";
    }
    let lower = format!(" {} ", text.to_lowercase());
    MARKERS
        .iter()
        .map(|(code, words)| (*code, words.iter().filter(|w| lower.contains(*w)).count()))
        .filter(|(_, hits)| *hits > 0)
        .max_by_key(|(_, hits)| *hits)
        .map(|(code, _)| code)
        .unwrap_or("en")
}

/// A polite question for `field` in `language`.
pub fn default_question(language: &str, field: &str, fields: &FieldSet) -> String {
    let builtin = match (language, field) {
        ("es", "email") => Some("¿Me compartes tu correo electrónico para enviártelo?"),
        ("es", "name") => Some("¿Cómo te llamas?"),
        ("es", "phone") => Some("¿A qué número de teléfono podemos llamarte?"),
        ("pt", "email") => Some("Pode me passar seu e-mail para enviarmos?"),
        ("pt", "name") => Some("Qual é o seu nome?"),
        ("pt", "phone") => Some("Qual é o melhor telefone para falarmos com você?"),
        ("fr", "email") => Some("Pouvez-vous me donner votre adresse e-mail ?"),
        ("fr", "name") => Some("Puis-je avoir votre nom ?"),
        ("fr", "phone") => Some("À quel numéro pouvons-nous vous joindre ?"),
        ("de", "email") => Some("Wie lautet Ihre E-Mail-Adresse?"),
        ("de", "name") => Some("Wie ist Ihr Name?"),
        ("de", "phone") => Some("Unter welcher Telefonnummer erreichen wir Sie?"),
        ("id", "email") => Some("Boleh minta alamat email Anda?"),
        ("id", "name") => Some("Boleh tahu nama Anda?"),
        ("id", "phone") => Some("Nomor telepon mana yang bisa kami hubungi?"),
        ("ja", "email") => Some("メールアドレスを教えていただけますか?"),
        ("ja", "name") => Some("お名前を教えていただけますか?"),
        ("ja", "phone") => Some("ご連絡先の電話番号を教えていただけますか?"),
        ("th", "email") => Some("ขออีเมลของคุณได้ไหมคะ"),
        ("th", "name") => Some("ขอทราบชื่อของคุณได้ไหมคะ"),
        ("th", "phone") => Some("ขอเบอร์โทรศัพท์ที่ติดต่อได้ไหมคะ"),
        (_, "email") => Some("Could you share your email address so we can send it over?"),
        (_, "name") => Some("May I have your name?"),
        (_, "phone") => Some("What's the best phone number to reach you on?"),
        _ => None,
    };
    match builtin {
        Some(question) => question.to_owned(),
        None => {
            let label = fields
                .get(field)
                .map(|f| {
                    if f.label.is_empty() {
                        f.name.replace('_', " ")
                    } else {
                        f.label.clone()
                    }
                })
                .unwrap_or_else(|| field.replace('_', " "));
            format!("Could you tell me your {}?", label.to_lowercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_common_languages() {
        assert_eq!(detect("Hola, quiero reservar una mesa por favor"), "es");
        assert_eq!(detect("Olá, meu nome é João e quero ajuda"), "pt");
        assert_eq!(detect("สวัสดีครับ"), "th");
        assert_eq!(detect("こんにちは、予約したいです"), "ja");
        assert_eq!(detect("Halo, nama saya Budi, saya mau pesan"), "id");
        assert_eq!(detect("Hi, can you send me the brochure?"), "en");
    }
}
