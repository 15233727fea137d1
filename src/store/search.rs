//! Finding customers for a dashboard's list: by part of the name (trigram
//! index), exact email, phone in E.164, or platform user id, with platform,
//! tag and conversation-status filters, newest activity first, a page at a
//! time. The statement is built from the filters present, so each shape of
//! query gets a plan that uses its index instead of one generic plan. The
//! newest-first order walks the index on the hour of the last activity
//! (migration 0022), which a message moves at most once an hour, so the
//! message path keeps updating customers in place.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::StoreError;

/// What the searched text can match; every present part is OR-ed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matchers {
    /// Any part of the name (case-insensitive).
    pub name_contains: Option<String>,
    /// The exact email, lower-cased.
    pub email: Option<String>,
    /// The exact phone, in E.164.
    pub phone: Option<String>,
    /// The user's id on any platform.
    pub platform_user_id: Option<String>,
}

impl Matchers {
    fn is_empty(&self) -> bool {
        self.name_contains.is_none()
            && self.email.is_none()
            && self.phone.is_none()
            && self.platform_user_id.is_none()
    }
}

/// A customer search in one workspace.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// The tenant.
    pub workspace_id: String,
    /// The searched text, read every way it can be; `None` lists everyone.
    pub matchers: Option<Matchers>,
    /// Customers who wrote from this platform.
    pub platform: Option<String>,
    /// Customers with this tag.
    pub tag: Option<String>,
    /// Customers with a conversation in this status.
    pub status: Option<String>,
    /// Continue after this position (activity time, customer id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Rows to return.
    pub limit: i64,
}

/// One customer of a list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerListRow {
    /// The customer.
    pub customer_id: Uuid,
    /// Name, or `Guest User`.
    pub display_name: String,
    /// Email, if known.
    pub email: Option<String>,
    /// Phone in E.164, if known.
    pub phone: Option<String>,
    /// Platforms the customer wrote from.
    pub platforms: Vec<String>,
    /// Text of the latest message.
    pub last_message: Option<String>,
    /// First message.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest message.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The customer's own latest message.
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// Latest message, or creation for customers who never wrote: the sort key.
    pub activity_at: DateTime<Utc>,
    /// Conversations started.
    pub conversation_count: i32,
    /// Open questions.
    pub unresolved_queries: i32,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Status of the latest conversation.
    pub status: Option<String>,
}

/// Escapes `%`, `_` and `\` so user text matches literally inside `LIKE`.
pub fn like_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The `ILIKE` pattern of a name part: the part anywhere, matched literally.
fn name_part_pattern(part: &str) -> String {
    format!("%{}%", like_literal(part))
}

/// Runs the search; rows come newest activity first.
pub async fn customers(
    conn: &mut PgConnection,
    search: &Search,
) -> Result<Vec<CustomerListRow>, StoreError> {
    let common_name_part = match search
        .matchers
        .as_ref()
        .and_then(|m| m.name_contains.as_deref())
    {
        Some(part) => name_part_is_common(conn, &search.workspace_id, part).await?,
        None => false,
    };
    // The page is chosen first on `customers` alone; names, contacts, tags
    // and the latest status are read for the page's rows only.
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(
        "WITH page AS (
           SELECT c.id, coalesce(c.last_seen_at, c.created_at) AS activity_at
             FROM enrich.customers c
            WHERE c.workspace_id = ",
    );
    sql.push_bind(search.workspace_id.clone());
    if let Some(matchers) = &search.matchers {
        push_matchers(&mut sql, &search.workspace_id, matchers, common_name_part);
    }
    if let Some(platform) = &search.platform {
        sql.push(" AND ");
        sql.push_bind(platform.clone());
        sql.push(" = ANY (c.platforms)");
    }
    if let Some(tag) = &search.tag {
        sql.push(
            " AND EXISTS (SELECT 1 FROM enrich.tags t WHERE t.customer_id = c.id AND t.tag = ",
        );
        sql.push_bind(tag.clone());
        sql.push(")");
    }
    if let Some(status) = &search.status {
        sql.push(
            " AND EXISTS (SELECT 1 FROM enrich.conversations cv WHERE cv.customer_id = c.id AND cv.status = ",
        );
        sql.push_bind(status.clone());
        sql.push(")");
    }
    if let Some((at, id)) = search.after {
        // The hour bound lets the index skip the hours already listed; the
        // exact bound continues inside the cursor's hour.
        sql.push(" AND c.activity_hour <= date_trunc('hour', ");
        sql.push_bind(at);
        sql.push(" AT TIME ZONE 'UTC') AND (coalesce(c.last_seen_at, c.created_at), c.id) < (");
        sql.push_bind(at);
        sql.push(", ");
        sql.push_bind(id);
        sql.push(")");
    }
    // `activity_hour` is the hour of the activity time, so this is the
    // order of (activity time, id) read off the hour index, sorted exactly
    // only within each hour.
    sql.push(
        " ORDER BY c.activity_hour DESC, coalesce(c.last_seen_at, c.created_at) DESC, c.id DESC LIMIT ",
    );
    sql.push_bind(search.limit);
    sql.push(
        ")
         SELECT c.id AS customer_id, coalesce(n.value, 'Guest User') AS display_name,
                e.value AS email, p.value AS phone, c.platforms, c.last_message,
                c.first_seen_at, c.last_seen_at, c.last_customer_message_at,
                page.activity_at, c.conversation_count, c.unresolved_queries,
                coalesce((SELECT array_agg(t.tag ORDER BY t.tag) FROM enrich.tags t
                           WHERE t.customer_id = c.id), '{}') AS tags,
                (SELECT cv.status FROM enrich.conversations cv WHERE cv.customer_id = c.id
                  ORDER BY cv.started_at DESC, cv.id DESC LIMIT 1) AS status
           FROM page
           JOIN enrich.customers c ON c.id = page.id
           LEFT JOIN enrich.customer_fields n ON n.customer_id = c.id AND n.field = 'name'
           LEFT JOIN enrich.customer_fields e ON e.customer_id = c.id AND e.field = 'email'
           LEFT JOIN enrich.customer_fields p ON p.customer_id = c.id AND p.field = 'phone'
          ORDER BY page.activity_at DESC, page.id DESC",
    );
    // Not a cached prepared statement: after five runs Postgres may switch
    // a cached statement to one generic plan, which cannot see how common
    // the searched name part is and reads every match (7,500 rows, 70 ms
    // for `q=ann` on 100,000 customers) instead of walking the activity
    // index until the page is full (6.5 ms). Planning each search costs
    // about a millisecond.
    Ok(sql
        .build_query_as::<CustomerListRow>()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?)
}

/// Name parts matching at least this many names of the workspace are
/// searched by walking its customers newest first (the page fills after a
/// few thousand rows at most); rarer ones by reading every match and sorting.
const COMMON_NAME_MATCHES: i64 = 1_000;

/// Whether `part` is in at least [`COMMON_NAME_MATCHES`] of the workspace's
/// names (stops counting there).
async fn name_part_is_common(
    conn: &mut PgConnection,
    workspace_id: &str,
    part: &str,
) -> Result<bool, StoreError> {
    let matches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
           SELECT 1 FROM enrich.customer_fields f
             JOIN enrich.customers c ON c.id = f.customer_id
            WHERE f.field = 'name' AND f.value ILIKE $1 AND c.workspace_id = $2
            LIMIT $3) common",
    )
    .bind(name_part_pattern(part))
    .bind(workspace_id)
    .bind(COMMON_NAME_MATCHES)
    // Planned for each pattern, as the search itself (see below).
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    Ok(matches >= COMMON_NAME_MATCHES)
}

/// `AND c.id IN (…)`: one indexed lookup per way the text can match. A
/// common name part is instead checked customer by customer (`EXISTS`), so
/// Postgres walks the activity index and stops once the page is full
/// rather than sorting thousands of matches (`q=ann` on 100,000 customers:
/// 7,500 matches, 90 ms sorted, 7 ms walked).
fn push_matchers(
    sql: &mut QueryBuilder<Postgres>,
    workspace_id: &str,
    matchers: &Matchers,
    common_name_part: bool,
) {
    if matchers.is_empty() {
        sql.push(" AND false");
        return;
    }
    let walked_name = matchers.name_contains.as_ref().filter(|_| common_name_part);
    if let Some(part) = walked_name {
        sql.push(
            " AND (EXISTS (SELECT 1 FROM enrich.customer_fields wf
                            WHERE wf.customer_id = c.id AND wf.field = 'name' AND wf.value ILIKE ",
        );
        sql.push_bind(name_part_pattern(part));
        sql.push(")");
        let others = Matchers {
            name_contains: None,
            ..matchers.clone()
        };
        if !others.is_empty() {
            sql.push(" OR");
            push_lookups(sql, workspace_id, &others);
        }
        sql.push(")");
        return;
    }
    sql.push(" AND");
    push_lookups(sql, workspace_id, matchers);
}

/// ` c.id IN (…)` over the present matchers, one indexed lookup each.
fn push_lookups(sql: &mut QueryBuilder<Postgres>, workspace_id: &str, matchers: &Matchers) {
    sql.push(" c.id IN (");
    let mut first = true;
    let mut union = |sql: &mut QueryBuilder<Postgres>| {
        if !first {
            sql.push(" UNION ");
        }
        first = false;
    };
    if let Some(part) = &matchers.name_contains {
        union(sql);
        sql.push(
            "SELECT customer_id FROM enrich.customer_fields WHERE field = 'name' AND value ILIKE ",
        );
        sql.push_bind(name_part_pattern(part));
    }
    if let Some(email) = &matchers.email {
        union(sql);
        sql.push(
            "SELECT customer_id FROM enrich.customer_fields WHERE field = 'email' AND value = ",
        );
        sql.push_bind(email.clone());
    }
    if let Some(phone) = &matchers.phone {
        union(sql);
        sql.push(
            "SELECT customer_id FROM enrich.customer_fields WHERE field = 'phone' AND value = ",
        );
        sql.push_bind(phone.clone());
    }
    if let Some(user_id) = &matchers.platform_user_id {
        union(sql);
        sql.push("SELECT customer_id FROM enrich.customer_identities WHERE workspace_id = ");
        sql.push_bind(workspace_id.to_owned());
        sql.push(" AND platform_user_id = ");
        sql.push_bind(user_id.clone());
    }
    sql.push(")");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_match_literally() {
        assert_eq!(like_literal("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(like_literal("Ann"), "Ann");
    }
}
