"""The schema: every table relay keeps, as one SQLAlchemy Core MetaData.

The same definitions serve SQLite and MySQL/MariaDB; `migrations/` is generated from and
checked against this file (tests/store/test_migrations.py fails when they drift).
Times are naive UTC datetimes (`*_at`); ids are integers.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import mysql

# Names for constraints so that migrations can refer to them on both databases.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT ids that SQLite still treats as ROWID aliases (autoincrement works).
Id = BigInteger().with_variant(Integer(), "sqlite")
# Raw messages can be tens of MB: MySQL's BLOB stops at 64 KB.
Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
# Microsecond precision on MySQL (its default DATETIME drops fractions).
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Addresses: 64 local + @ + 255 domain; utf8mb4 keeps them inside InnoDB's index limit.
Email = String(320)


def _id() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


tenants = Table(
    "tenants",
    metadata,
    _id(),
    Column("name", String(100), nullable=False, unique=True),
    # Domains its senders may use in MAIL FROM / From; empty list = any domain.
    Column("sender_domains", JSON, nullable=False, default=list),
    # Per-tenant knobs (tracking, limits, transport); see README "Tenants".
    Column("settings", JSON, nullable=False, default=dict),
    Column("hold", Boolean, nullable=False, default=False),
    Column("created_at", Timestamp, nullable=False),
)

smtp_credentials = Table(
    "smtp_credentials",
    metadata,
    _id(),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("username", String(100), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("allow_no_suppression", Boolean, nullable=False, default=False),
    Column("hold", Boolean, nullable=False, default=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Timestamp, nullable=False),
    Column("last_used_at", Timestamp),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id(),
    # NULL tenant = admin key (sees every tenant).
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("name", String(100), nullable=False, default=""),
    # The first characters of the key, stored in clear to find the row; the rest is hashed.
    Column("prefix", String(32), nullable=False, unique=True),
    Column("key_hash", String(255), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("last_used_at", Timestamp),
    Column("revoked_at", Timestamp),
)

campaigns = Table(
    "campaigns",
    metadata,
    _id(),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),  # as the app gave it in X-Campaign-ID
    Column("state", String(16), nullable=False, default="active"),
    Column("settings", JSON, nullable=False, default=dict),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("tenant_id", "name"),
)

messages = Table(
    "messages",
    metadata,
    _id(),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("credential_id", Id, ForeignKey("smtp_credentials.id", ondelete="SET NULL")),
    Column("campaign_id", Id, ForeignKey("campaigns.id", ondelete="SET NULL")),
    Column("message_id_header", String(998), nullable=False, default=""),
    Column("mail_from", Email, nullable=False, default=""),
    Column("from_header", String(998), nullable=False, default=""),
    Column("subject", String(998), nullable=False, default=""),
    Column("size", Integer, nullable=False),
    # The original as accepted (control headers stripped); NULL once pruned.
    Column("raw", Blob),
    Column("raw_encoding", String(16), nullable=False, default="identity"),  # identity | zlib
    # Where rendering splices links and the pixel (relay.render._plan.dump), kept by intake
    # so that delivery does not parse the message again; NULL when intake made none.
    Column("render_plan", Blob),
    Column("smtputf8", Boolean, nullable=False, default=False),
    # Per-message options from X-Relay-* headers (track, send_at, no_suppression …).
    Column("options", JSON, nullable=False, default=dict),
    Column("received_at", Timestamp, nullable=False),
    Column("pruned_at", Timestamp),
    Index(None, "tenant_id", "received_at"),
    Index(None, "campaign_id", "received_at"),
    Index("ix_messages_message_id_header", "message_id_header", mysql_length=191),
)

deliveries = Table(
    "deliveries",
    metadata,
    _id(),
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    # Denormalised from messages so the queue and the stats never join.
    Column("tenant_id", Id, nullable=False),
    Column("campaign_id", Id),
    Column("recipient", Email, nullable=False),  # as given (local part case kept)
    Column("recipient_key", Email, nullable=False),  # normalized, lowercased: for matching
    Column("domain", String(255), nullable=False),
    Column("rcpt_type", String(3), nullable=False, default="to"),  # to | cc | bcc
    Column("state", String(16), nullable=False, default="queued"),
    Column("attempts", SmallInteger, nullable=False, default=0),
    Column("next_attempt_at", Timestamp, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Timestamp),
    Column("last_reply_code", SmallInteger),
    Column("last_reply", Text),
    Column("bounce_kind", String(16)),
    Column("bounce_reason", String(32)),
    Column("account", String(100)),  # the pool account or MX host that took it
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("final_at", Timestamp),
    # Send even if the address is suppressed: X-Relay-No-Suppression from a credential
    # allowed to, or `relay queue retry --no-suppression`. Read again before each send.
    Column("no_suppression", Boolean, nullable=False, default=False, server_default=false()),
    # The queue: due deliveries by state and time.
    Index(None, "state", "next_attempt_at"),
    Index(None, "lease_expires_at"),
    Index(None, "message_id"),
    Index(None, "tenant_id", "created_at"),
    Index(None, "campaign_id", "state"),
    Index(None, "tenant_id", "recipient_key"),
    Index(None, "domain", "state"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    _id(),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("duration_ms", Integer, nullable=False, default=0),
    Column("transport", String(16), nullable=False),
    Column("account", String(100)),
    Column("remote_host", String(255)),
    Column("reply_code", SmallInteger),
    Column("enhanced_status", String(16)),
    Column("reply", Text),
    Column("result", String(16), nullable=False),  # delivered | deferred | bounced | failed
    Index(None, "delivery_id", "started_at"),
)

recipients = Table(
    "recipients",
    metadata,
    _id(),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("email", Email, nullable=False),  # normalized, lowercased key
    Column("status", String(16), nullable=False, default="active"),
    Column("first_seen_at", Timestamp, nullable=False),
    Column("last_seen_at", Timestamp, nullable=False),
    Column("messages_count", Integer, nullable=False, default=0),
    Column("delivered_count", Integer, nullable=False, default=0),
    Column("soft_bounce_count", Integer, nullable=False, default=0),
    Column("hard_bounce_count", Integer, nullable=False, default=0),
    Column("complaint_count", Integer, nullable=False, default=0),
    Column("open_count", Integer, nullable=False, default=0),
    Column("click_count", Integer, nullable=False, default=0),
    Column("last_bounce_at", Timestamp),
    Column("last_open_at", Timestamp),
    Column("last_click_at", Timestamp),
    UniqueConstraint("tenant_id", "email"),
)

links = Table(
    "links",
    metadata,
    _id(),
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),  # the n-th tracked link of the message
    Column("url", Text, nullable=False),
    UniqueConstraint("message_id", "position"),
)

recipient_events = Table(
    "recipient_events",
    metadata,
    _id(),
    Column("tenant_id", Id, nullable=False),
    Column("delivery_id", Id),
    Column("message_id", Id),
    Column("campaign_id", Id),
    Column("recipient", Email, nullable=False, default=""),  # normalized key
    Column("type", String(16), nullable=False),  # relay.model.EventType
    Column("occurred_at", Timestamp, nullable=False),
    Column("unique_first", Boolean, nullable=False, default=False),  # first of its type
    Column("machine", Boolean, nullable=False, default=False),  # proxy, scanner, prefetch
    Column("link_position", Integer),
    Column("url", Text),
    Column("ip", String(45)),
    Column("user_agent", String(512)),
    Column("detail", JSON),  # bounce kind, reason, status, diagnostic …
    Index(None, "delivery_id", "type"),
    Index(None, "campaign_id", "occurred_at"),
    Index(None, "tenant_id", "occurred_at"),
    Index(None, "tenant_id", "recipient", "occurred_at"),
)

suppressions = Table(
    "suppressions",
    metadata,
    _id(),
    # 0 = global (the whole installation), else the tenant's id; NULL cannot be unique.
    Column("scope", Id, nullable=False, default=0),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("email", Email, nullable=False),  # normalized key
    Column("reason", String(16), nullable=False),
    Column("source", String(255), nullable=False, default=""),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp),
    UniqueConstraint("scope", "email"),
    Index(None, "expires_at"),
)

recipient_lists = Table(
    "recipient_lists",
    metadata,
    _id(),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("tenant_id", "name"),
)

recipient_list_members = Table(
    "recipient_list_members",
    metadata,
    _id(),
    Column("list_id", Id, ForeignKey("recipient_lists.id", ondelete="CASCADE"), nullable=False),
    Column("email", Email, nullable=False),
    Column("fields", JSON, nullable=False, default=dict),
    Column("added_at", Timestamp, nullable=False),
    UniqueConstraint("list_id", "email"),
)

accounts = Table(
    "accounts",
    metadata,
    _id(),
    Column("name", String(100), nullable=False, unique=True),  # as in [[delivery.accounts]]
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_reason", String(255)),
    Column("paused_until", Timestamp),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("warmup_started_at", Timestamp),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

# Sending counters shared between nodes: per account per day, per tenant per minute.
usage_counters = Table(
    "usage_counters",
    metadata,
    _id(),
    Column("subject", String(120), nullable=False),  # 'account:primary', 'tenant:3'
    Column("window", String(8), nullable=False),  # 'day' | 'hour' | 'minute'
    Column("window_start", Timestamp, nullable=False),
    Column("count", Integer, nullable=False, default=0),
    Column("bounces", Integer, nullable=False, default=0),
    UniqueConstraint("subject", "window", "window_start"),
)

webhooks = Table(
    "webhooks",
    metadata,
    _id(),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("events", JSON, nullable=False, default=list),  # empty = all
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", Timestamp, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    _id(),
    Column("webhook_id", Id, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event", JSON, nullable=False),
    Column("state", String(16), nullable=False, default="pending"),  # pending | sent | failed
    Column("attempts", SmallInteger, nullable=False, default=0),
    Column("next_attempt_at", Timestamp, nullable=False),
    Column("last_error", Text),
    Column("created_at", Timestamp, nullable=False),
    Index(None, "state", "next_attempt_at"),
)

# Unmatched inbound bounces and other mail to the VERP domain that named no delivery.
inbound_reports = Table(
    "inbound_reports",
    metadata,
    _id(),
    Column("received_at", Timestamp, nullable=False),
    Column("rcpt", Email, nullable=False),
    Column("mail_from", Email, nullable=False, default=""),
    Column("matched", Boolean, nullable=False, default=False),
    Column("kind", String(16)),
    Column("detail", JSON),
    Column("raw", Blob),
    Index(None, "received_at"),
)

# Maintained stats counters (relay.store.stats): one row per tenant × campaign (0 = none) ×
# hour × metric, bumped by intake, outcome and the tracking event flush, so stats never scan
# deliveries or events.
stat_counters = Table(
    "stat_counters",
    metadata,
    _id(),
    Column("tenant_id", Id, nullable=False),
    Column("campaign_id", Id, nullable=False, default=0),
    Column("bucket_start", Timestamp, nullable=False),  # the hour, UTC
    Column("metric", String(32), nullable=False),
    Column("count", BigInteger, nullable=False, default=0),
    UniqueConstraint("tenant_id", "campaign_id", "bucket_start", "metric"),
    Index(None, "campaign_id", "bucket_start"),
    Index(None, "tenant_id", "bucket_start"),
)

# Roll-ups of stat_counters, bumped in the same upsert so that every stats read is a few
# rows: per campaign (0 = none) by day and all time, and per tenant (campaign_id -1) by hour,
# day and all time. 'all' rows have bucket_start 1970-01-01 (relay.store.stats).
stat_rollups = Table(
    "stat_rollups",
    metadata,
    _id(),
    Column("tenant_id", Id, nullable=False),
    Column("campaign_id", Id, nullable=False),  # 0 = no campaign, -1 = the whole tenant
    Column("span", String(8), nullable=False),  # 'hour' (tenant only) | 'day' | 'all'
    Column("bucket_start", Timestamp, nullable=False),
    Column("metric", String(32), nullable=False),
    Column("count", BigInteger, nullable=False, default=0),
    UniqueConstraint("tenant_id", "campaign_id", "span", "bucket_start", "metric"),
    Index(None, "campaign_id", "span", "bucket_start"),
)

# Monotonic change counters (e.g. 'suppressions') so other processes know to refresh caches.
change_counters = Table(
    "change_counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False, default=0),
)
