//! Exports: every profile of the workspace as CSV or JSONL, streamed row by
//! row as Postgres sends them (memory stays flat however many profiles
//! there are; the rows are `enrich.customer_profiles`, the same stream
//! `enricher customers export` writes), and everything held about one
//! customer as one JSON document (data portability).

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Api;
use super::auth::Caller;
use super::conversations::MessageInfo;
use super::customers::{self, ConversationInfo, FieldChangeInfo, NoteInfo, ProfileCard};
use super::problem::Problem;
use crate::store::profiles::{ExportFilter, ExportValue, ProfileExport};
use crate::store::{customer_card, notes};

/// Bytes gathered before a chunk is sent.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks buffered between the database reader and the client.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Rows of each list a per-customer export holds, at most.
const EXPORT_ALL: i64 = 1_000_000;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A header line, then one line per profile; arrays joined with `|`, JSON compact.
    Csv,
    /// One JSON object per line, keys in the view's column order.
    Jsonl,
}

/// Query of `GET /v1/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` or `jsonl`.
    pub format: Format,
    /// Only profiles updated at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
    pub since: Option<String>,
}

/// Encodes rows into chunks.
enum Encoder {
    Csv(Box<csv::Writer<Vec<u8>>>),
    Jsonl(Vec<u8>),
}

impl Encoder {
    fn new(format: Format) -> Encoder {
        match format {
            Format::Csv => Encoder::Csv(Box::new(csv::Writer::from_writer(Vec::with_capacity(
                CHUNK_BYTES,
            )))),
            Format::Jsonl => Encoder::Jsonl(Vec::with_capacity(CHUNK_BYTES)),
        }
    }

    fn header(&mut self, columns: &[String]) -> Result<(), EncodeError> {
        if let Encoder::Csv(writer) = self {
            writer.write_record(columns).map_err(|_| EncodeError)?;
        }
        Ok(())
    }

    fn row(&mut self, columns: &[String], values: &[ExportValue]) -> Result<(), EncodeError> {
        match self {
            Encoder::Csv(writer) => {
                for value in values {
                    writer
                        .write_field(value.csv_field().as_bytes())
                        .map_err(|_| EncodeError)?;
                }
                writer
                    .write_record(None::<&[u8]>)
                    .map_err(|_| EncodeError)?;
            }
            Encoder::Jsonl(buffer) => {
                buffer.push(b'{');
                for (index, (name, value)) in columns.iter().zip(values).enumerate() {
                    if index > 0 {
                        buffer.push(b',');
                    }
                    serde_json::to_writer(&mut *buffer, name).map_err(|_| EncodeError)?;
                    buffer.push(b':');
                    serde_json::to_writer(&mut *buffer, value).map_err(|_| EncodeError)?;
                }
                buffer.extend_from_slice(b"}\n");
            }
        }
        Ok(())
    }

    /// The bytes written so far, once there are enough (or `all`).
    fn take(&mut self, all: bool) -> Result<Option<Bytes>, EncodeError> {
        match self {
            Encoder::Csv(writer) => {
                // The writer's own buffer is 8 KiB: hand its output on every
                // few rows' worth by swapping in a fresh writer.
                let pending = writer.get_ref().len();
                if !all && pending < CHUNK_BYTES {
                    return Ok(None);
                }
                let full = std::mem::replace(
                    writer,
                    Box::new(csv::Writer::from_writer(Vec::with_capacity(CHUNK_BYTES))),
                );
                let bytes = full.into_inner().map_err(|_| EncodeError)?;
                Ok((!bytes.is_empty()).then(|| Bytes::from(bytes)))
            }
            Encoder::Jsonl(buffer) => {
                if buffer.is_empty() || (!all && buffer.len() < CHUNK_BYTES) {
                    return Ok(None);
                }
                Ok(Some(Bytes::from(std::mem::replace(
                    buffer,
                    Vec::with_capacity(CHUNK_BYTES),
                ))))
            }
        }
    }
}

/// A row could not be encoded.
#[derive(Debug)]
struct EncodeError;

type Chunk = Result<Bytes, std::io::Error>;

async fn stream_rows(
    export: Arc<ProfileExport>,
    api: Api,
    filter: ExportFilter,
    format: Format,
    out: mpsc::Sender<Chunk>,
) {
    let columns: Vec<String> = export.column_names().map(str::to_owned).collect();
    let mut encoder = Encoder::new(format);
    let failed = |what: &str| std::io::Error::other(format!("export failed while {what}"));
    if encoder.header(&columns).is_err() {
        let _ = out.send(Err(failed("writing the header"))).await;
        return;
    }
    let mut rows = export.rows(&api.pool, &filter);
    loop {
        match rows.try_next().await {
            Ok(Some(values)) => {
                if encoder.row(&columns, &values).is_err() {
                    let _ = out.send(Err(failed("encoding a row"))).await;
                    return;
                }
            }
            Ok(None) => break,
            Err(error) => {
                tracing::error!(error = %error, "export stopped: reading enrich.customer_profiles failed");
                let _ = out.send(Err(failed("reading profiles"))).await;
                return;
            }
        }
        match encoder.take(false) {
            Ok(Some(chunk)) => {
                if out.send(Ok(chunk)).await.is_err() {
                    return; // The client went away.
                }
            }
            Ok(None) => {}
            Err(_) => {
                let _ = out.send(Err(failed("encoding"))).await;
                return;
            }
        }
    }
    match encoder.take(true) {
        Ok(Some(chunk)) => {
            let _ = out.send(Ok(chunk)).await;
        }
        Ok(None) => {}
        Err(_) => {
            let _ = out.send(Err(failed("encoding"))).await;
        }
    }
}

/// Every profile of the workspace, streamed.
#[utoipa::path(get, path = "/v1/export", tag = "export",
    params(ExportQuery),
    responses(
        (status = 200, description = "CSV (`text/csv`) or JSONL (`application/x-ndjson`) rows of `enrich.customer_profiles`", body = String, content_type = "text/csv"),
        (status = 400, description = "Bad format or `since`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn all(
    State(api): State<Api>,
    caller: Caller,
    Query(query): Query<ExportQuery>,
) -> Result<Response, Problem> {
    let since = query
        .since
        .as_deref()
        .map(crate::store::profiles::parse_since)
        .transpose()
        .map_err(Problem::bad_request)?;
    let export = Arc::new(ProfileExport::prepare(&api.pool).await?);
    let filter = ExportFilter {
        workspace: Some(caller.workspace_id.clone()),
        since,
    };
    let (sender, receiver) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    tokio::spawn(stream_rows(export, api, filter, query.format, sender));
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let mut response = Body::from_stream(chunks).into_response();
    let content_type = match query.format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Jsonl => "application/x-ndjson",
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// A conversation with its transcript.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationTranscript {
    /// The conversation.
    #[serde(flatten)]
    pub conversation: ConversationInfo,
    /// Its messages, oldest first.
    pub messages: Vec<MessageInfo>,
}

/// Everything held about one customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerExport {
    /// When the export was made.
    pub exported_at: DateTime<Utc>,
    /// The profile card (visitor IP and user agent only with the `pii` scope).
    pub profile: ProfileCard,
    /// Every field change.
    pub history: Vec<FieldChangeInfo>,
    /// Every conversation with its messages.
    pub conversations: Vec<ConversationTranscript>,
    /// Every note.
    pub notes: Vec<NoteInfo>,
}

/// Everything held about one customer, as one JSON document.
#[utoipa::path(get, path = "/v1/customers/{id}/export", tag = "export",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The customer's data", body = CustomerExport),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn one(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<CustomerExport>, Problem> {
    let profile = customers::card(&api, &caller, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such customer in this workspace"))?;
    let mut conn = api.pool.acquire().await?;
    let history = customer_card::history(&mut conn, id, None, EXPORT_ALL).await?;
    let conversations = customer_card::conversations(&mut conn, id, None, EXPORT_ALL).await?;
    let mut messages = customer_card::all_messages(&mut conn, id).await?;
    let notes = notes::for_customer(&mut conn, &caller.workspace_id, id, None, EXPORT_ALL).await?;
    let conversations = conversations
        .into_iter()
        .rev()
        .map(|conversation| {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut messages)
                .into_iter()
                .partition(|m| m.conversation_id == conversation.conversation_id);
            messages = rest;
            ConversationTranscript {
                conversation: ConversationInfo::from(conversation),
                messages: mine
                    .into_iter()
                    .map(|m| MessageInfo::from(m.message))
                    .collect(),
            }
        })
        .collect();
    Ok(Json(CustomerExport {
        exported_at: Utc::now(),
        profile,
        history: history.into_iter().map(FieldChangeInfo::from).collect(),
        conversations,
        notes: notes.into_iter().map(NoteInfo::from).collect(),
    }))
}
