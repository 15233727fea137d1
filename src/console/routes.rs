//! The console's pages and forms. Reads call the API's handlers
//! ([`crate::api::customers`], [`crate::api::conversations`],
//! [`crate::api::export`]) with the session's caller; writes call the API's
//! write handlers, so a field edit or a note from the console is the same
//! `profile.update` / `note.added` the API runs, with the token's name as
//! actor, and shows up on the page the browser is sent back to.

use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::session::{self, SESSION_COOKIE, SIGN_IN_COOKIE, SIGN_IN_PAGE, Session};
use super::{ConsoleError, csrf, views};
use crate::api::Api;
use crate::api::auth::Scope;
use crate::api::customers::{self, FieldsPatch, ListQuery, PageQuery, ProfileCard};
use crate::api::export::{self, ExportQuery, Format};
use crate::api::instructions::{self, Instructions};
use crate::api::notes::{self, NewNote};
use crate::api::{conversations, problem::Problem};
use crate::event::{MAX_AGENT_INSTRUCTIONS_CHARS, Platform};
use crate::store::escalations;

/// Customers per list page.
const LIST_PAGE: i64 = 25;
/// Field changes the customer page shows.
const HISTORY_ROWS: i64 = 50;
/// Escalations the customer page shows.
const ESCALATION_ROWS: i64 = 50;
/// Messages per transcript page.
const TRANSCRIPT_PAGE: i64 = 200;
/// Conversations searched for the one a transcript shows.
const CONVERSATION_LOOKUP: i64 = 500;
/// Statuses a conversation can have, for the list's filter.
const STATUSES: &[&str] = &["active", "requesting", "intervened", "closed"];
/// Platforms offered in the list's filter.
const PLATFORMS: &[Platform] = &[
    Platform::Web,
    Platform::Whatsapp,
    Platform::Line,
    Platform::Messenger,
    Platform::Instagram,
    Platform::Telegram,
    Platform::Mobile,
    Platform::Email,
    Platform::Api,
];

/// Who is signed in, for the page header.
#[derive(Debug, Serialize)]
struct Viewer {
    name: String,
    workspace: String,
    can_write: bool,
}

fn viewer(session: &Session) -> Viewer {
    Viewer {
        name: session.caller.name.clone(),
        workspace: session.caller.workspace_id.clone(),
        can_write: session.caller.has(Scope::Write),
    }
}

/// `/ui`: the customer list.
pub async fn home() -> Redirect {
    Redirect::to("/ui/customers")
}

/// Any other `/ui` path.
pub async fn not_found() -> ConsoleError {
    ConsoleError::NotFound
}

/// The stylesheet.
pub async fn stylesheet() -> Response {
    views::asset(views::STYLESHEET, "text/css; charset=utf-8")
}

/// The script.
pub async fn script() -> Response {
    views::asset(views::SCRIPT, "text/javascript; charset=utf-8")
}

fn sign_in_form(
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, ConsoleError> {
    let nonce = session::new_secret();
    let mut response = views::page(
        status,
        "sign_in.html",
        serde_json::json!({ "nonce": nonce, "error": error }),
    )?;
    response.headers_mut().append(
        header::SET_COOKIE,
        session::sign_in_cookie(&nonce, session::over_tls(headers)),
    );
    Ok(response)
}

/// `GET /ui/sign-in`.
pub async fn sign_in_page(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    if session::current(&api, &headers).await?.is_some() {
        return Ok(Redirect::to("/ui/customers").into_response());
    }
    sign_in_form(&headers, StatusCode::OK, None)
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    token: String,
    nonce: String,
}

/// `POST /ui/sign-in`: a workspace API token opens a session.
pub async fn sign_in(
    State(api): State<Api>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    let expected = session::cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if !csrf::same_origin(&headers) || !csrf::matches(expected, &form.nonce) {
        return sign_in_form(
            &headers,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired. Paste the token again."),
        );
    }
    let Some(secret) = session::open(&api, &form.token).await? else {
        return sign_in_form(
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("That token is unknown or revoked."),
        );
    };
    let tls = session::over_tls(&headers);
    let mut response = Redirect::to("/ui/customers").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, &secret, session::SESSION_HOURS * 3600, tls),
    );
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(SIGN_IN_COOKIE, "", 0, tls),
    );
    Ok(response)
}

/// A form that carries only its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /ui/sign-out`: ends the session on the server and in the browser.
pub async fn sign_out(
    State(api): State<Api>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    session.check_form(&headers, &form.csrf)?;
    session::close(&api, &session).await?;
    let mut response = Redirect::to(SIGN_IN_PAGE).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, "", 0, session::over_tls(&headers)),
    );
    Ok(response)
}

/// Query of the customer list.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ListParams {
    q: Option<String>,
    platform: Option<String>,
    tag: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `GET /ui/customers`: the chat-users list.
pub async fn customers(
    State(api): State<Api>,
    session: Session,
    Query(params): Query<ListParams>,
) -> Result<Response, ConsoleError> {
    let params = ListParams {
        q: non_empty(params.q),
        platform: non_empty(params.platform),
        tag: non_empty(params.tag),
        status: non_empty(params.status),
        cursor: non_empty(params.cursor),
    };
    let query = ListQuery {
        q: params.q.clone(),
        platform: params.platform.clone(),
        tag: params.tag.clone(),
        status: params.status.clone(),
        cursor: params.cursor.clone(),
        limit: Some(LIST_PAGE),
    };
    let Json(page) = customers::list(State(api), session.caller.clone(), Query(query)).await?;
    let filtered = params.q.is_some()
        || params.platform.is_some()
        || params.tag.is_some()
        || params.status.is_some();
    views::page(
        StatusCode::OK,
        "customers.html",
        serde_json::json!({
            "viewer": viewer(&session),
            "csrf": session.csrf_token(),
            "params": params,
            "filtered": filtered,
            "customers": page.customers,
            "next_cursor": page.next_cursor,
            "statuses": STATUSES,
            "platforms": PLATFORMS.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        }),
    )
}

/// A section of the AI profile, titled.
#[derive(Debug, Serialize)]
struct InsightSection {
    title: &'static str,
    items: serde_json::Value,
}

fn insight_sections(card: &ProfileCard) -> Vec<InsightSection> {
    const TITLES: &[(&str, &str)] = &[
        ("communication_preferences", "Communication preferences"),
        ("topics_of_interest", "Topics of interest"),
        ("purchase_patterns", "Purchase patterns"),
        ("key_characteristics", "Key characteristics"),
    ];
    let Some(insights) = &card.insights else {
        return Vec::new();
    };
    TITLES
        .iter()
        .filter_map(|(key, title)| {
            let items = insights.sections.get(*key)?;
            let non_empty = items.as_array().is_some_and(|a| !a.is_empty());
            non_empty.then(|| InsightSection {
                title,
                items: items.clone(),
            })
        })
        .collect()
}

/// Renders the customer page, with `notice` (a refused edit) when given.
async fn customer_page(
    api: Api,
    session: &Session,
    id: Uuid,
    status: StatusCode,
    notice: Option<String>,
) -> Result<Response, ConsoleError> {
    let caller = &session.caller;
    let card = customers::card(&api, caller, id)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    let escalations = {
        let mut conn = api.pool.acquire().await?;
        escalations::for_customer(&mut conn, &caller.workspace_id, id, ESCALATION_ROWS).await?
    };
    let history_query = PageQuery {
        cursor: None,
        limit: Some(HISTORY_ROWS),
    };
    let Json(history) = customers::history(
        State(api.clone()),
        caller.clone(),
        Path(id),
        Query(history_query),
    )
    .await?;
    let fields: Vec<serde_json::Value> = api
        .workspaces
        .get(&caller.workspace_id)
        .map(|workspace| {
            workspace
                .fields
                .iter()
                .map(|def| serde_json::json!({"name": def.name, "label": def.label}))
                .collect()
        })
        .unwrap_or_default();
    let status_now = card.conversations.first().map(|c| c.status.clone());
    let sections = insight_sections(&card);
    views::page(
        status,
        "customer.html",
        serde_json::json!({
            "viewer": viewer(session),
            "csrf": session.csrf_token(),
            "notice": notice,
            "card": card,
            "status": status_now,
            "insight_sections": sections,
            "escalations": escalations,
            "history": history.changes,
            "workspace_fields": fields,
            "max_instructions": MAX_AGENT_INSTRUCTIONS_CHARS,
            "max_note": notes::MAX_NOTE_CHARS,
        }),
    )
}

/// `GET /ui/customers/{id}`: the customer page.
pub async fn customer(
    State(api): State<Api>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let id = Uuid::parse_str(&id).map_err(|_| ConsoleError::NotFound)?;
    customer_page(api, &session, id, StatusCode::OK, None).await
}

/// Re-renders the page with the API's reason when it refused a write.
async fn after_write(
    api: Api,
    session: &Session,
    id: Uuid,
    outcome: Result<Uuid, Problem>,
    anchor: &str,
) -> Result<Response, ConsoleError> {
    match outcome {
        Ok(now) => Ok(Redirect::to(&format!("/ui/customers/{now}#{anchor}")).into_response()),
        Err(problem) if problem.status == 422 || problem.status == 403 => {
            let status =
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            let notice = problem.detail.unwrap_or(problem.title);
            customer_page(api, session, id, status, Some(notice)).await
        }
        Err(problem) => Err(ConsoleError::Api(problem)),
    }
}

fn customer_id(id: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(id).map_err(|_| ConsoleError::NotFound)
}

/// The field form: `action` is `save` (set `value`) or `clear`.
#[derive(Debug, Deserialize)]
pub struct FieldForm {
    csrf: String,
    field: String,
    #[serde(default)]
    value: String,
    action: String,
}

/// `POST /ui/customers/{id}/fields`: sets or clears one field as an agent.
pub async fn edit_field(
    State(api): State<Api>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<FieldForm>,
) -> Result<Response, ConsoleError> {
    session.check_form(&headers, &form.csrf)?;
    let id = customer_id(&id)?;
    let value = match form.action.as_str() {
        "clear" => serde_json::Value::Null,
        _ => serde_json::Value::String(form.value.trim().to_owned()),
    };
    let mut fields = serde_json::Map::new();
    fields.insert(form.field.clone(), value);
    let outcome = customers::update_fields(
        State(api.clone()),
        session.caller.clone(),
        Path(id),
        Json(FieldsPatch { fields }),
    )
    .await
    .map(|Json(updated)| updated.id);
    after_write(api, &session, id, outcome, "profile").await
}

/// The note form.
#[derive(Debug, Deserialize)]
pub struct NoteForm {
    csrf: String,
    text: String,
}

/// `POST /ui/customers/{id}/notes`: adds a note with the token's name as author.
pub async fn add_note(
    State(api): State<Api>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Result<Response, ConsoleError> {
    session.check_form(&headers, &form.csrf)?;
    let id = customer_id(&id)?;
    let outcome = notes::add(
        State(api.clone()),
        session.caller.clone(),
        Path(id),
        Json(NewNote { text: form.text }),
    )
    .await
    .map(|_| id);
    after_write(api, &session, id, outcome, "notes").await
}

/// The agent-instructions form.
#[derive(Debug, Deserialize)]
pub struct InstructionsForm {
    csrf: String,
    instructions: String,
}

/// `POST /ui/customers/{id}/instructions`: replaces the agent instructions.
pub async fn set_instructions(
    State(api): State<Api>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<InstructionsForm>,
) -> Result<Response, ConsoleError> {
    session.check_form(&headers, &form.csrf)?;
    let id = customer_id(&id)?;
    let outcome = instructions::replace(
        State(api.clone()),
        session.caller.clone(),
        Path(id),
        Json(Instructions {
            instructions: form.instructions,
        }),
    )
    .await
    .map(|_| id);
    after_write(api, &session, id, outcome, "instructions").await
}

/// Query of a transcript page.
#[derive(Debug, Deserialize)]
pub struct TranscriptParams {
    cursor: Option<String>,
}

/// `GET /ui/customers/{id}/conversations/{conversation_id}`: one
/// conversation of the customer with its transcript.
pub async fn transcript(
    State(api): State<Api>,
    session: Session,
    Path((id, conversation_id)): Path<(String, String)>,
    Query(params): Query<TranscriptParams>,
) -> Result<Response, ConsoleError> {
    let id = customer_id(&id)?;
    let caller = session.caller.clone();
    let lookup = PageQuery {
        cursor: None,
        limit: Some(CONVERSATION_LOOKUP),
    };
    let Json(list) =
        customers::conversations(State(api.clone()), caller.clone(), Path(id), Query(lookup))
            .await?;
    let conversation = list
        .conversations
        .into_iter()
        .find(|c| c.conversation_id == conversation_id)
        .ok_or(ConsoleError::NotFound)?;
    let page = PageQuery {
        cursor: non_empty(params.cursor),
        limit: Some(TRANSCRIPT_PAGE),
    };
    let Json(messages) =
        conversations::messages(State(api), caller, Path(conversation_id), Query(page)).await?;
    views::page(
        StatusCode::OK,
        "transcript.html",
        serde_json::json!({
            "viewer": viewer(&session),
            "csrf": session.csrf_token(),
            "customer_id": id,
            "conversation": conversation,
            "messages": messages.messages,
            "next_cursor": messages.next_cursor,
        }),
    )
}

/// `GET /ui/export.csv`: every profile of the workspace, streamed by the
/// API's export.
pub async fn export_csv(
    State(api): State<Api>,
    session: Session,
) -> Result<Response, ConsoleError> {
    let query = ExportQuery {
        format: Format::Csv,
        since: None,
    };
    let mut response = export::all(State(api), session.caller, Query(query)).await?;
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"customers.csv\""),
    );
    Ok(response)
}
