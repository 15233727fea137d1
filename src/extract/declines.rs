//! Explicit refusals to give a profile field.
//!
//! When a customer says they would rather not share a detail ("I'd rather
//! not give my phone", "prefiero no dar mi teléfono"), the enricher records
//! the refusal so that neither agents nor the language model ask for that
//! field again. Only refusals that name the field are recognised here; a bare
//! "no thanks" after a question depends on what was asked, which the caller
//! knows and this module does not.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::grounding::{match_loose_at, option_mentions};
use crate::fields::FieldSet;

/// Ways of naming each built-in field, in the languages customers write in.
const BUILTIN_TERMS: [(&str, &[&str]); 6] = [
    (
        "name",
        &[
            "name",
            "full name",
            "first name",
            "last name",
            "surname",
            "nombre",
            "nombre completo",
            "apellido",
            "nome",
            "nome completo",
            "sobrenome",
            "nom",
            "nama",
        ],
    ),
    (
        "email",
        &[
            "email",
            "e-mail",
            "mail",
            "email address",
            "e-mail address",
            "mail address",
            "correo",
            "correo electrónico",
            "correo electronico",
            "endereço de email",
            "endereço de e-mail",
            "courriel",
            "adresse email",
            "adresse e-mail",
            "alamat email",
        ],
    ),
    (
        "phone",
        &[
            "phone",
            "phone number",
            "number",
            "mobile",
            "mobile number",
            "cell",
            "cell phone",
            "cellphone",
            "cell number",
            "whatsapp",
            "whatsapp number",
            "whats",
            "telephone",
            "telephone number",
            "tel",
            "contact number",
            "teléfono",
            "telefono",
            "número",
            "numero",
            "número de teléfono",
            "numero de telefono",
            "celular",
            "móvil",
            "movil",
            "telefone",
            "número de telefone",
            "número de celular",
            "téléphone",
            "numéro",
            "portable",
            "nomor",
            "nomor hp",
            "nomor telepon",
            "hp",
            "handy",
            "telefonnummer",
        ],
    ),
    (
        "language",
        &[
            "language", "idioma", "língua", "langue", "bahasa", "sprache",
        ],
    ),
    ("country", &["country", "país", "pais", "pays", "negara"]),
    (
        "location",
        &[
            "location",
            "address",
            "home address",
            "city",
            "ubicación",
            "dirección",
            "ciudad",
            "endereço",
            "cidade",
            "localização",
            "adresse",
            "ville",
            "alamat",
            "kota",
        ],
    ),
];

/// Most words between a refusal and the field it names ("rather not give
/// you my phone").
const MAX_FILLER_WORDS: usize = 4;

/// Phrases that start a refusal and are followed by the field.
static REFUSAL_LEAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)\b(?:i['’]d\s+rather\s+not|i\s+would\s+rather\s+not|rather\s+not|",
        r"i['’]d\s+prefer\s+not\s+to|i\s+would\s+prefer\s+not\s+to|prefer\s+not\s+to|",
        r"(?:don['’]t|do\s+not|dont)\s+(?:really\s+)?(?:want|wish|like)\s+to|",
        r"i\s+(?:won['’]t|will\s+not|wont)|",
        r"(?:i['’]m|i\s+am|im)\s+not\s+(?:going\s+to|gonna|comfortable|willing\s+to)|",
        r"not\s+comfortable|(?:don['’]t|do\s+not)\s+feel\s+comfortable|",
        r"(?:don['’]t|do\s+not|never)\s+(?:give|share|hand)\s+out|",
        r"i\s+(?:don['’]t|do\s+not|never)\s+(?:give|share)|",
        r"i\s+(?:can['’]t|cannot)\s+(?:give|share|provide)|",
        r"i\s+refuse\s+to|",
        // "I'll give my name but not my number": giving one detail, not another.
        r"(?:give|giving|share|sharing|tell|provide)\b[^.!?\n]{0,40}?\bbut\s+not\s+my|",
        r"(?:dar|doy|compartir|comparto|passar|passo|dou)\b[^.!?\n]{0,40}?\b(?:pero\s+no\s+mi|mas\s+n[ãa]o\s+(?:o\s+)?(?:meu|minha))|",
        r"prefiero\s+no|no\s+quiero|no\s+deseo|no\s+voy\s+a|no\s+me\s+gustar[ií]a|",
        r"prefiro\s+n[ãa]o|n[ãa]o\s+quero|n[ãa]o\s+vou|n[ãa]o\s+gostaria\s+de|n[ãa]o\s+desejo|",
        r"je\s+pr[ée]f[èe]re\s+ne\s+pas|je\s+ne\s+veux\s+pas|",
        r"saya\s+tidak\s+mau|tidak\s+mau|ich\s+m[öo]chte\s+nicht)\b"
    ))
    .expect("valid regex")
});

/// Words allowed between a refusal and the field: verbs of giving and
/// articles or first-person possessives.
const FILLER_WORDS: &str = concat!(
    "give giving share sharing provide providing leave leaving send sending say saying tell ",
    "telling disclose disclosing hand handing out over put enter type write post you u it my the ",
    "a an any your with to dar darte darle darles compartir dejar decir proporcionar pasar ",
    "pasarte enviar facilitar brindar mi mis el la los su passar informar fornecer deixar falar ",
    "dizer mandar compartilhar meu minha o os donner partager mon ma le memberikan kasih geben ",
    "meine",
);

/// Words that join a second field to a refused one.
const CONJUNCTIONS: [&str; 13] = [
    "or", "and", "nor", "ni", "o", "ou", "y", "e", "atau", "dan", "et", "und", "oder",
];

/// A value being given for the field just named ("and my email is …").
static VALUE_FOLLOWS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:is|are|es|é|est|ist|adalah|:|=)").expect("valid regex")
});

/// "No phone please", "sin teléfono, gracias": the field after "no".
static NO_FIELD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:no|sin|sem)\s+").expect("valid regex"));

/// What must follow "no <field>" for it to be a refusal.
static NO_FIELD_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*[,.!]?\s*(?:please|pls|plz|thanks|thank\s+you|thx|por\s+favor|gracias|obrigad[oa]|s['’]il\s+vous\s+pla[iî]t)\b",
    )
    .expect("valid regex")
});

/// A refusal right after the field is named ("phone: rather not").
static REFUSAL_AFTER_FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^\s*[,:?\-–—]?\s*(?:i['’]d\s+rather\s+not|i\s+would\s+rather\s+not|rather\s+not|",
        r"(?:i\s+)?prefer\s+not|no\s+thanks|no\s+thank\s+you|not\s+needed|not\s+necessary|",
        r"prefiero\s+no|no\s+gracias|prefiro\s+n[ãa]o|n[ãa]o,?\s+obrigad[oa])\b"
    ))
    .expect("valid regex")
});

/// Asking not to be called or emailed, with the field each request refuses.
static DO_NOT_CONTACT: LazyLock<[(Regex, &'static str); 2]> = LazyLock::new(|| {
    [
        (
            Regex::new(concat!(
                r"(?i)(?:\b(?:don['’]t|do\s+not|dont|never|stop)\s+(?:call|calling|phone|phoning|ring|ringing|",
                r"text|texting|sms|whatsapp)\s+me\b|\bno\s+(?:phone\s+)?calls\b|",
                r"\bno\s+(?:me\s+)?llam(?:e|en|es)\b|\bn[ãa]o\s+(?:me\s+)?lig(?:ue|uem|ar)\b)"
            ))
            .expect("valid regex"),
            "phone",
        ),
        (
            Regex::new(
                r"(?i)\b(?:don['’]t|do\s+not|dont|never|stop)\s+(?:e-?mail|e-?mailing)\s+me\b|\bno\s+e-?mails\b",
            )
            .expect("valid regex"),
            "email",
        ),
    ]
});

/// Words after "don't call me" that limit the request rather than refuse.
static CONTACT_QUALIFIER_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^\s*(?:before|after|until|till|between|at|on|during|in|today|tomorrow|tonight|now|",
        r"right\s+now|late|early|this|next|antes|después|despues|depois|hoje|hoy|mañana|amanhã)\b"
    ))
    .expect("valid regex")
});

/// Fields in `fields` the customer explicitly refuses to give in `text`,
/// in field-set order.
pub fn declined_fields(text: &str, fields: &FieldSet) -> Vec<String> {
    let (terms, owners) = field_terms(fields);
    let mut declined: Vec<&str> = Vec::new();

    for lead in REFUSAL_LEAD.find_iter(text) {
        for owner in fields_after_lead(text, lead.end(), &terms) {
            declined.push(owners[owner]);
        }
    }
    for no in NO_FIELD.find_iter(text) {
        if let Some((owner, end)) = term_at(text, no.end(), &terms) {
            let rest = &text[end..];
            let whole_message = text[..no.start()].trim().is_empty()
                && rest.trim().trim_matches(['.', '!', ',', ';']).is_empty();
            if whole_message || NO_FIELD_END.is_match(rest) {
                declined.push(owners[owner]);
            }
        }
    }
    for (owner, range) in option_mentions(text, &terms) {
        if REFUSAL_AFTER_FIELD.is_match(&text[range.end..]) {
            declined.push(owners[owner]);
        }
    }
    for (pattern, field) in DO_NOT_CONTACT.iter() {
        if fields.get(field).is_none() {
            continue;
        }
        let refused = pattern.find_iter(text).any(|m| {
            let rest = &text[m.end()..];
            let next_capitalised = rest
                .trim_start_matches([' ', '\t'])
                .chars()
                .next()
                .is_some_and(char::is_uppercase);
            !CONTACT_QUALIFIER_AFTER.is_match(rest) && !next_capitalised
        });
        if refused {
            declined.push(field);
        }
    }

    fields
        .iter()
        .filter(|d| declined.contains(&d.name.as_str()))
        .map(|d| d.name.clone())
        .collect()
}

/// Every phrase that names a field, with the field each belongs to: the
/// built-in terms (borrowed, as this runs on every customer message) plus
/// each custom field's label and its name with spaces.
fn field_terms(fields: &FieldSet) -> (Vec<Cow<'static, str>>, Vec<&str>) {
    let mut terms: Vec<Cow<'static, str>> = Vec::new();
    let mut owners = Vec::new();
    for def in fields.iter() {
        let builtin = BUILTIN_TERMS
            .iter()
            .find(|(name, _)| *name == def.name)
            .map(|(_, terms)| *terms);
        let mut own: Vec<Cow<'static, str>> = match builtin {
            Some(list) => list.iter().map(|t| Cow::Borrowed(*t)).collect(),
            None => vec![
                Cow::Owned(def.label.trim().to_lowercase()),
                Cow::Owned(def.name.replace('_', " ")),
            ],
        };
        own.retain(|t| !t.is_empty());
        own.dedup();
        for term in own {
            terms.push(term);
            owners.push(def.name.as_str());
        }
    }
    (terms, owners)
}

/// The longest field term at byte `pos`, as whole words (a plural "s" is
/// allowed): its index and where it ends.
fn term_at(text: &str, pos: usize, terms: &[Cow<'_, str>]) -> Option<(usize, usize)> {
    terms
        .iter()
        .enumerate()
        .filter_map(|(i, term)| {
            let end = match_loose_at(text, pos, term)?;
            let end = if text[end..].starts_with(['s', 'S']) {
                end + 1
            } else {
                end
            };
            let boundary = !text[end..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric);
            boundary.then_some((i, end, term.len()))
        })
        .max_by_key(|(_, _, len)| *len)
        .map(|(i, end, _)| (i, end))
}

/// The fields named after a refusal phrase ending at byte `pos`: the first
/// one, allowing a few words of giving ("give you my") in between, and any
/// joined to it by "or", "and", "ni", "ou" … ("my phone or my email").
fn fields_after_lead(text: &str, pos: usize, terms: &[Cow<'_, str>]) -> Vec<usize> {
    let mut found = Vec::new();
    let Some((first, mut end)) = term_after(text, pos, terms) else {
        return found;
    };
    found.push(first);
    loop {
        let start =
            end + (text[end..].len() - text[end..].trim_start_matches([' ', '\t', ',']).len());
        let Some(word) = next_word(text, start) else {
            break;
        };
        if !CONJUNCTIONS.contains(&text[word.clone()].to_lowercase().as_str()) {
            break;
        }
        match term_after(text, word.end, terms) {
            Some((term, term_end)) if !VALUE_FOLLOWS.is_match(&text[term_end..]) => {
                found.push(term);
                end = term_end;
            }
            _ => break,
        }
    }
    found
}

/// The first field term after byte `pos`, allowing a few words of giving
/// ("give you my") before it: its index and where it ends.
fn term_after(text: &str, mut pos: usize, terms: &[Cow<'_, str>]) -> Option<(usize, usize)> {
    for _ in 0..=MAX_FILLER_WORDS {
        pos += text[pos..].len() - text[pos..].trim_start().len();
        if let Some(found) = term_at(text, pos, terms) {
            return Some(found);
        }
        let word = next_word(text, pos)?;
        let word_lower = text[word.clone()].to_lowercase();
        if !FILLER_WORDS.split_whitespace().any(|f| f == word_lower) {
            return None;
        }
        pos = word.end;
    }
    None
}

/// The word (letters and apostrophes) starting at byte `pos`.
fn next_word(text: &str, pos: usize) -> Option<Range<usize>> {
    let len: usize = text[pos..]
        .chars()
        .take_while(|c| c.is_alphabetic() || *c == '\'' || *c == '’')
        .map(char::len_utf8)
        .sum();
    (len > 0).then_some(pos..pos + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{FieldDef, FieldFormat};

    fn fields() -> FieldSet {
        let custom = vec![
            FieldDef {
                label: "Company name".into(),
                ..FieldDef::new("company_name", FieldFormat::Text)
            },
            FieldDef {
                label: "Budget".into(),
                ..FieldDef::new("budget", FieldFormat::Number)
            },
        ];
        FieldSet::new(custom, &[]).expect("valid field set")
    }

    fn check(cases: &[(&str, &[&str])]) {
        let set = fields();
        for (text, expected) in cases {
            assert_eq!(declined_fields(text, &set), *expected, "{text:?}");
        }
    }

    #[test]
    fn english_refusals() {
        check(&[
            ("I'd rather not give my phone", &["phone"]),
            ("I’d rather not share my phone number.", &["phone"]),
            ("I would rather not say my name", &["name"]),
            ("no phone please", &["phone"]),
            ("No phone.", &["phone"]),
            ("no emails please", &["email"]),
            ("I don't want to share my email", &["email"]),
            ("I do not want to give you my e-mail address", &["email"]),
            ("I prefer not to say my name", &["name"]),
            ("I'd prefer not to give my whatsapp", &["phone"]),
            ("I won't share my mobile", &["phone"]),
            ("I'm not comfortable giving my cell number", &["phone"]),
            ("I don't give out my number", &["phone"]),
            ("I never share my email", &["email"]),
            ("don't call me", &["phone"]),
            ("Please do not call me again", &["phone"]),
            ("stop calling me!", &["phone"]),
            ("don't email me", &["email"]),
            ("Phone: rather not", &["phone"]),
            ("my email? I'd rather not", &["email"]),
            ("email, no thanks", &["email"]),
            ("I'd rather not give my address", &["location"]),
            (
                "It's Dominic. I'll give my name but not my number",
                &["phone"],
            ),
            ("happy to share my email but not my phone", &["phone"]),
        ]);
    }

    #[test]
    fn spanish_portuguese_and_other_refusals() {
        check(&[
            ("prefiero no dar mi teléfono", &["phone"]),
            ("No quiero compartir mi correo electrónico", &["email"]),
            ("no quiero dar mi número", &["phone"]),
            ("prefiero no decir mi nombre", &["name"]),
            ("sin teléfono, gracias", &["phone"]),
            ("no me llamen por favor", &["phone"]),
            ("não quero passar meu email", &["email"]),
            ("prefiro não informar meu telefone", &["phone"]),
            ("nao quero dar meu nome", &["name"]),
            ("não me liguem", &["phone"]),
            ("je préfère ne pas donner mon numéro", &["phone"]),
            ("saya tidak mau kasih nomor hp", &["phone"]),
        ]);
    }

    #[test]
    fn several_fields_in_one_message() {
        check(&[
            (
                "I'd rather not give my phone or my email",
                &["email", "phone"],
            ),
            (
                "prefiero no dar mi nombre ni mi teléfono",
                &["name", "phone"],
            ),
            (
                "I'd rather not give my phone and my email is a@example.com",
                &["phone"],
            ),
            (
                "no phone please, and I'd rather not share my email",
                &["email", "phone"],
            ),
            (
                "name: John. Phone: rather not. Email: prefer not",
                &["email", "phone"],
            ),
        ]);
    }

    #[test]
    fn custom_field_names_win_over_builtin_terms() {
        check(&[
            ("I'd rather not share my company name", &["company_name"]),
            ("I don't want to say my budget", &["budget"]),
            ("company name: rather not", &["company_name"]),
        ]);
    }

    #[test]
    fn not_refusals() {
        check(&[
            ("no thanks", &[]),
            ("I'd rather not say", &[]),
            ("no, phone is fine", &[]),
            ("I don't want to change my email", &[]),
            ("I don't want to lose my phone", &[]),
            ("please don't share my email with third parties", &[]),
            ("my phone is 415 555 0100", &[]),
            ("There's no email confirmation", &[]),
            ("I got no number from the courier yesterday", &[]),
            ("there's no name on the package", &[]),
            ("don't call me before 5pm", &[]),
            ("don't call me on Sundays", &[]),
            ("don't call me Mike, call me Michael", &[]),
            ("I'd rather not give my order number", &[]),
            ("no me llamo Juan", &[]),
            ("I'd rather you call my phone", &[]),
            ("I can give you a ring but not now", &[]),
            ("please tell me the price but not the number of items", &[]),
            ("", &[]),
        ]);
    }

    #[test]
    fn only_fields_in_the_set_are_returned() {
        let builtins = FieldSet::new(Vec::new(), &[]).expect("valid");
        assert!(declined_fields("I'd rather not share my company name", &builtins).is_empty());
        assert_eq!(
            declined_fields("I'd rather not share my name", &builtins),
            vec!["name".to_owned()]
        );
        assert!(declined_fields("I don't want to say my budget", &builtins).is_empty());
    }
}
