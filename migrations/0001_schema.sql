-- enricher's tables live in their own schema so they can share a database.
CREATE SCHEMA IF NOT EXISTS enrich;

CREATE TABLE enrich.workspaces (
    id                 text PRIMARY KEY,
    enrichment_enabled boolean     NOT NULL DEFAULT true,
    default_region     text,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE enrich.field_definitions (
    workspace_id text    NOT NULL REFERENCES enrich.workspaces (id) ON DELETE CASCADE,
    name         text    NOT NULL,
    label        text    NOT NULL,
    format       text    NOT NULL CHECK (format IN ('text','textarea','select','radio','checkbox','email','phone','number','date')),
    options      text[]  NOT NULL DEFAULT '{}',
    validation   text,
    description  text    NOT NULL DEFAULT '',
    required     boolean NOT NULL DEFAULT false,
    ask_priority integer NOT NULL DEFAULT 100,
    ai_writable  boolean NOT NULL DEFAULT true,
    builtin      boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE enrich.customers (
    id                     uuid PRIMARY KEY,
    workspace_id           text        NOT NULL REFERENCES enrich.workspaces (id),
    profile_picture_url    text,
    source                 text CHECK (source IN ('organic','api','campaign','import')),
    first_message_tag      text,
    agent_instructions     text CHECK (char_length(agent_instructions) <= 2000),
    created_at             timestamptz NOT NULL DEFAULT now(),
    first_seen_at          timestamptz,
    last_seen_at           timestamptz,
    conversation_count     integer     NOT NULL DEFAULT 0,
    customer_message_count integer     NOT NULL DEFAULT 0,
    bot_message_count      integer     NOT NULL DEFAULT 0,
    agent_message_count    integer     NOT NULL DEFAULT 0,
    unresolved_queries     integer     NOT NULL DEFAULT 0,
    last_message           text,
    platforms              text[]      NOT NULL DEFAULT '{}',
    avg_sentiment          real,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_workspace_updated ON enrich.customers (workspace_id, updated_at);

CREATE TABLE enrich.identities (
    workspace_id     text        NOT NULL,
    platform         text        NOT NULL,
    platform_user_id text        NOT NULL,
    customer_id      uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    visitor          jsonb,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, platform, platform_user_id)
);
CREATE INDEX identities_customer ON enrich.identities (customer_id);

-- Current value of every field of every customer, with where it came from.
CREATE TABLE enrich.customer_fields (
    customer_id    uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    field          text        NOT NULL,
    value          text        NOT NULL,
    source         text        NOT NULL CHECK (source IN ('agent','form','api','customer','system')),
    source_rank    smallint    NOT NULL,
    actor          text,
    evidence       text,
    message_id     bigint,
    confidence     real,
    model          text,
    prompt_version text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, field)
);
CREATE INDEX customer_fields_email ON enrich.customer_fields (value) WHERE field = 'email';

-- Append-only: rows are inserted, never updated (erasure may delete them).
CREATE TABLE enrich.field_changes (
    id             bigserial PRIMARY KEY,
    workspace_id   text        NOT NULL,
    customer_id    uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    field          text        NOT NULL,
    old_value      text,
    new_value      text,
    source         text        NOT NULL,
    actor          text,
    message_id     bigint,
    model          text,
    prompt_version text,
    changed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX field_changes_customer ON enrich.field_changes (customer_id, changed_at);

CREATE FUNCTION enrich.forbid_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'enrich.% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER field_changes_append_only BEFORE UPDATE ON enrich.field_changes
    FOR EACH ROW EXECUTE FUNCTION enrich.forbid_update();

CREATE TABLE enrich.declined_fields (
    customer_id uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    field       text        NOT NULL,
    message_id  bigint,
    declined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, field)
);

CREATE TABLE enrich.conversations (
    id                bigserial PRIMARY KEY,
    workspace_id      text        NOT NULL,
    external_id       text        NOT NULL,
    customer_id       uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    platform          text        NOT NULL,
    status            text        NOT NULL DEFAULT 'active',
    started_at        timestamptz NOT NULL,
    last_message_at   timestamptz,
    ended_at          timestamptz,
    message_count     integer     NOT NULL DEFAULT 0,
    customer_turns    integer     NOT NULL DEFAULT 0,
    source            text,
    first_message_tag text,
    resolved_by       text,
    resolution        text,
    summary           text,
    sentiment         text CHECK (sentiment IN ('positive','neutral','negative')),
    sentiment_score   real CHECK (sentiment_score BETWEEN -1 AND 1),
    topics            text[]      NOT NULL DEFAULT '{}',
    summarized_at     timestamptz,
    UNIQUE (workspace_id, external_id)
);
CREATE INDEX conversations_customer ON enrich.conversations (customer_id);

CREATE TABLE enrich.messages (
    id              bigserial PRIMARY KEY,
    workspace_id    text        NOT NULL,
    conversation_id bigint      NOT NULL REFERENCES enrich.conversations (id) ON DELETE CASCADE,
    customer_id     uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    event_id        text        NOT NULL,
    sender          text        NOT NULL CHECK (sender IN ('customer','bot','agent','system')),
    agent_id        text,
    text            text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, event_id)
);
CREATE INDEX messages_conversation ON enrich.messages (conversation_id, id);
CREATE INDEX messages_customer ON enrich.messages (customer_id);

-- Every event handled, by id: the truth behind "redelivery is a no-op".
CREATE TABLE enrich.processed_events (
    workspace_id text        NOT NULL,
    event_id     text        NOT NULL,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, event_id)
);

CREATE TABLE enrich.asks (
    id              bigserial PRIMARY KEY,
    workspace_id    text        NOT NULL,
    conversation_id bigint      NOT NULL REFERENCES enrich.conversations (id) ON DELETE CASCADE,
    customer_id     uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    field           text        NOT NULL,
    question        text        NOT NULL,
    reason          text        NOT NULL,
    language        text,
    in_reply_to     text,
    customer_turn   integer     NOT NULL DEFAULT 0,
    asked_at        timestamptz NOT NULL DEFAULT now(),
    outcome         text        NOT NULL DEFAULT 'pending' CHECK (outcome IN ('answered','declined','ignored','pending')),
    outcome_at      timestamptz
);
CREATE INDEX asks_conversation ON enrich.asks (conversation_id);
CREATE INDEX asks_customer ON enrich.asks (customer_id);

CREATE TABLE enrich.tags (
    customer_id uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    tag         text        NOT NULL,
    source      text,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, tag)
);

CREATE TABLE enrich.escalations (
    id              bigserial PRIMARY KEY,
    workspace_id    text        NOT NULL,
    conversation_id bigint      NOT NULL REFERENCES enrich.conversations (id) ON DELETE CASCADE,
    customer_id     uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    status          text        NOT NULL,
    agent_id        text,
    reason          text,
    resolved        boolean     NOT NULL DEFAULT false,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX escalations_conversation ON enrich.escalations (conversation_id);

CREATE TABLE enrich.conversation_statuses (
    id              bigserial PRIMARY KEY,
    conversation_id bigint      NOT NULL REFERENCES enrich.conversations (id) ON DELETE CASCADE,
    status          text        NOT NULL,
    agent_id        text,
    reason          text,
    occurred_at     timestamptz NOT NULL
);

CREATE TABLE enrich.customer_insights (
    customer_id    uuid PRIMARY KEY REFERENCES enrich.customers (id) ON DELETE CASCADE,
    insights       jsonb       NOT NULL,
    model          text,
    prompt_version text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE enrich.llm_calls (
    id                bigserial PRIMARY KEY,
    workspace_id      text        NOT NULL,
    conversation_id   bigint,
    customer_id       uuid,
    purpose           text        NOT NULL,
    model             text        NOT NULL,
    prompt_version    text,
    prompt_tokens     integer     NOT NULL DEFAULT 0,
    completion_tokens integer     NOT NULL DEFAULT 0,
    latency_ms        integer     NOT NULL DEFAULT 0,
    attempts          integer     NOT NULL DEFAULT 1,
    outcome           text        NOT NULL,
    rejections        jsonb       NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_day ON enrich.llm_calls (created_at);

CREATE TABLE enrich.merges (
    id           bigserial PRIMARY KEY,
    workspace_id text        NOT NULL,
    into_customer uuid       NOT NULL,
    from_customer uuid       NOT NULL,
    reason       text        NOT NULL,
    moved        jsonb       NOT NULL DEFAULT '{}',
    merged_at    timestamptz NOT NULL DEFAULT now()
);

-- What stays after a customer is forgotten: no personal data, only that it happened.
CREATE TABLE enrich.erasures (
    id           bigserial PRIMARY KEY,
    workspace_id text        NOT NULL,
    customer_id  uuid        NOT NULL,
    requested_by text,
    event_id     text,
    erased_at    timestamptz NOT NULL DEFAULT now()
);

-- Outbound events written in the same transaction as the change they announce,
-- published after commit and deleted once the broker confirms them.
CREATE TABLE enrich.outbox (
    id          bigserial PRIMARY KEY,
    routing_key text        NOT NULL,
    body        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
