//! The customer's language, guessed from their words, and default questions
//! in it. Used to phrase asks when no model wrote the question; never stored
//! as a profile fact, since the customer did not state it.
//!
//! The script settles most languages outright (Thai, Japanese, Korean,
//! Chinese, Arabic, Devanagari, Greek, Hebrew, Cyrillic); letters only one
//! Latin-script language uses (Turkish `ı ş ğ`, Polish `ł ą ę`, Vietnamese
//! `ơ ư đ`) settle some more; then common words of each language vote, and
//! `whatlang`'s trigram model breaks a tie or speaks when no word does.
//! Short chat messages give trigram models little to go on, so it is the
//! last resort, and only for languages enricher has questions in.

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
            "dónde",
            "pueden",
            "podrían",
            "está",
            "qué",
        ],
    ),
    (
        "pt",
        &[
            "olá", "obrigad", "quero", "preciso", "você", "meu ", "minha", "não", "pedido",
            "tenho", "chamo", "vocês", "pode ", "está",
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
            "pouvez",
            "pourriez",
            "vous ",
            "n'est",
            "c'est",
        ],
    ),
    (
        "de",
        &[
            "hallo", "danke", "ich ", "möchte", "bitte", "mein", "heiße", "können", "sie ",
            "nicht", "haben", "was ",
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
            "belum",
            "berapa",
        ],
    ),
    (
        "it",
        &[
            "ciao",
            "grazie",
            "vorrei",
            "mio ",
            "sono ",
            "per favore",
            "potete",
            "chiamo",
            " il ",
            "non è",
        ],
    ),
    (
        "nl",
        &[
            "hoi", "bedankt", "graag", "mijn", "kunnen", "jullie", " ik ", "ik ", "waar",
            "hoe laat", " het ",
        ],
    ),
    ("sv", &["hej", "tack", "jag ", "heter", " och ", "min "]),
    (
        "tr",
        &[
            "merhaba",
            "teşekkür",
            "benim",
            "adım",
            "misiniz",
            "istiyorum",
        ],
    ),
    (
        "pl",
        &["dzień dobry", "dziękuję", "proszę", "czy ", "moje", "jest"],
    ),
    ("vi", &["xin chào", "cảm ơn", "tôi", "không"]),
];

/// Languages enricher has built-in questions in.
const QUESTION_LANGUAGES: &[&str] = &[
    "en", "es", "pt", "fr", "de", "it", "nl", "id", "ja", "th", "zh", "ko", "ru", "uk", "ar", "hi",
    "tr", "pl", "vi", "sv",
];

/// ISO 639-1 code of the text's language; `en` when nothing else stands out.
pub fn detect(text: &str) -> &'static str {
    let has = |range: std::ops::RangeInclusive<char>| text.chars().any(|c| range.contains(&c));
    if has('\u{0E00}'..='\u{0E7F}') {
        return "th";
    }
    if has('\u{3040}'..='\u{30FF}') {
        return "ja";
    }
    if has('\u{AC00}'..='\u{D7AF}') || has('\u{1100}'..='\u{11FF}') {
        return "ko";
    }
    if has('\u{4E00}'..='\u{9FFF}') {
        return "zh";
    }
    if has('\u{0600}'..='\u{06FF}') {
        return "ar";
    }
    if has('\u{0900}'..='\u{097F}') {
        return "hi";
    }
    if has('\u{0370}'..='\u{03FF}') {
        return "el";
    }
    if has('\u{0590}'..='\u{05FF}') {
        return "he";
    }
    if has('\u{0400}'..='\u{04FF}') {
        return if text.chars().any(|c| "іїєґІЇЄҐ".contains(c)) {
            "uk"
        } else {
            "ru"
        };
    }
    if text.chars().any(|c| "ışğİŞĞ".contains(c)) {
        return "tr";
    }
    if text.chars().any(|c| "łąęśźżćńŁĄĘŚŹŻĆŃ".contains(c)) {
        return "pl";
    }
    if text
        .chars()
        .any(|c| "ơưđạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹƠƯĐ".contains(c))
    {
        return "vi";
    }
    let lower = format!(" {} ", text.to_lowercase());
    let mut votes: Vec<(&'static str, usize)> = MARKERS
        .iter()
        .map(|(code, words)| (*code, words.iter().filter(|w| lower.contains(*w)).count()))
        .filter(|(_, hits)| *hits > 0)
        .collect();
    votes.sort_by_key(|(_, hits)| std::cmp::Reverse(*hits));
    // whatlang is the costly part: asked only when the markers do not decide.
    match votes.as_slice() {
        [] => trigram_guess(text).unwrap_or("en"),
        [(best, hits), (_, next), ..] if hits == next => {
            let tied: Vec<&str> = votes
                .iter()
                .filter(|(_, h)| h == hits)
                .map(|(c, _)| *c)
                .collect();
            trigram_guess(text)
                .filter(|g| tied.contains(g))
                .unwrap_or(best)
        }
        [(best, _), ..] => best,
    }
}

/// whatlang's guess, when it names a language enricher has questions in.
fn trigram_guess(text: &str) -> Option<&'static str> {
    let info = whatlang::detect(text)?;
    if info.confidence() < 0.1 {
        return None;
    }
    let code = match info.lang() {
        whatlang::Lang::Eng => "en",
        whatlang::Lang::Spa => "es",
        whatlang::Lang::Por => "pt",
        whatlang::Lang::Fra => "fr",
        whatlang::Lang::Deu => "de",
        whatlang::Lang::Ita => "it",
        whatlang::Lang::Nld => "nl",
        whatlang::Lang::Ind => "id",
        whatlang::Lang::Swe => "sv",
        whatlang::Lang::Tur => "tr",
        whatlang::Lang::Pol => "pl",
        whatlang::Lang::Vie => "vi",
        _ => return None,
    };
    QUESTION_LANGUAGES.contains(&code).then_some(code)
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
        ("it", "email") => Some("Mi può indicare il suo indirizzo email?"),
        ("it", "name") => Some("Posso sapere il suo nome?"),
        ("it", "phone") => Some("A quale numero di telefono possiamo contattarla?"),
        ("nl", "email") => Some("Wat is uw e-mailadres?"),
        ("nl", "name") => Some("Mag ik uw naam?"),
        ("nl", "phone") => Some("Op welk telefoonnummer kunnen we u bereiken?"),
        ("sv", "email") => Some("Vilken e-postadress kan vi använda?"),
        ("sv", "name") => Some("Vad heter du?"),
        ("sv", "phone") => Some("Vilket telefonnummer kan vi nå dig på?"),
        ("id", "email") => Some("Boleh minta alamat email Anda?"),
        ("id", "name") => Some("Boleh tahu nama Anda?"),
        ("id", "phone") => Some("Nomor telepon mana yang bisa kami hubungi?"),
        ("ja", "email") => Some("メールアドレスを教えていただけますか?"),
        ("ja", "name") => Some("お名前を教えていただけますか?"),
        ("ja", "phone") => Some("ご連絡先の電話番号を教えていただけますか?"),
        ("th", "email") => Some("ขออีเมลของคุณได้ไหมคะ"),
        ("th", "name") => Some("ขอทราบชื่อของคุณได้ไหมคะ"),
        ("th", "phone") => Some("ขอเบอร์โทรศัพท์ที่ติดต่อได้ไหมคะ"),
        ("zh", "email") => Some("请问您的电子邮箱是什么？"),
        ("zh", "name") => Some("请问怎么称呼您？"),
        ("zh", "phone") => Some("请问您的联系电话是多少？"),
        ("ko", "email") => Some("이메일 주소를 알려주시겠어요?"),
        ("ko", "name") => Some("성함이 어떻게 되세요?"),
        ("ko", "phone") => Some("연락 가능한 전화번호를 알려주시겠어요?"),
        ("ru", "email") => Some("Подскажите, пожалуйста, ваш адрес электронной почты?"),
        ("ru", "name") => Some("Как к вам обращаться?"),
        ("ru", "phone") => Some("По какому номеру телефона с вами можно связаться?"),
        ("uk", "email") => Some("Підкажіть, будь ласка, вашу електронну адресу?"),
        ("uk", "name") => Some("Як до вас звертатися?"),
        ("uk", "phone") => Some("За яким номером телефону з вами можна зв'язатися?"),
        ("ar", "email") => Some("هل يمكنك تزويدنا ببريدك الإلكتروني؟"),
        ("ar", "name") => Some("ما اسمك الكريم؟"),
        ("ar", "phone") => Some("ما رقم الهاتف الذي يمكننا التواصل معك عليه؟"),
        ("hi", "email") => Some("क्या आप अपना ईमेल पता बता सकते हैं?"),
        ("hi", "name") => Some("क्या मैं आपका नाम जान सकता हूँ?"),
        ("hi", "phone") => Some("हम आपसे किस फ़ोन नंबर पर संपर्क कर सकते हैं?"),
        ("tr", "email") => Some("E-posta adresinizi paylaşabilir misiniz?"),
        ("tr", "name") => Some("Adınızı öğrenebilir miyim?"),
        ("tr", "phone") => Some("Size hangi telefon numarasından ulaşabiliriz?"),
        ("pl", "email") => Some("Czy może Pan/Pani podać adres e-mail?"),
        ("pl", "name") => Some("Jak się Pan/Pani nazywa?"),
        ("pl", "phone") => Some("Pod jakim numerem telefonu możemy się skontaktować?"),
        ("vi", "email") => Some("Bạn có thể cho mình xin địa chỉ email được không?"),
        ("vi", "name") => Some("Mình có thể biết tên của bạn không?"),
        ("vi", "phone") => Some("Chúng tôi có thể liên hệ với bạn qua số điện thoại nào?"),
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
        for (text, code) in [
            ("Hola, quiero reservar una mesa por favor", "es"),
            ("Olá, meu nome é João e quero ajuda", "pt"),
            ("สวัสดีครับ", "th"),
            ("こんにちは、予約したいです", "ja"),
            ("Halo, nama saya Budi, saya mau pesan", "id"),
            ("Hi, can you send me the brochure?", "en"),
            ("Kunnen jullie mij de offerte sturen?", "nl"),
            ("Siparişim hâlâ gelmedi", "tr"),
            ("Chciałbym umówić wizytę", "pl"),
            ("Перезвоните мне, пожалуйста", "ru"),
            ("가격표를 보내주실 수 있나요?", "ko"),
            ("我的订单还没到", "zh"),
            ("طلبي لم يصل بعد", "ar"),
            ("मेरा ऑर्डर अभी तक नहीं आया", "hi"),
            ("Potete mandarmi il preventivo?", "it"),
        ] {
            assert_eq!(detect(text), code, "{text}");
        }
    }

    #[test]
    fn every_question_language_has_its_own_questions() {
        let fields = FieldSet::new(Vec::new(), &[]).expect("fields");
        let english = default_question("en", "email", &fields);
        for language in QUESTION_LANGUAGES.iter().filter(|l| **l != "en") {
            for field in ["name", "email", "phone"] {
                assert_ne!(
                    default_question(language, field, &fields),
                    default_question("en", field, &fields),
                    "{language} {field}"
                );
            }
        }
        assert!(english.contains("email"));
    }
}
