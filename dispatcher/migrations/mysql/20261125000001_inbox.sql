-- The durable inbox, MySQL/MariaDB dialect (cluster mode). Times are ms since the Unix epoch.
-- Ids compare byte for byte (utf8mb4_bin): user "Ann" and "ann" are different users.

CREATE TABLE messages (
    id BINARY(16) NOT NULL PRIMARY KEY,
    msg_id VARCHAR(128) NOT NULL,
    ts BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    data MEDIUMTEXT NOT NULL,
    KEY messages_expiry (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE idempotency (
    msg_id VARCHAR(128) NOT NULL PRIMARY KEY,
    message BINARY(16) NOT NULL,
    created_at BIGINT NOT NULL,
    KEY idempotency_age (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE inbox (
    user_id VARCHAR(128) NOT NULL,
    seq BIGINT NOT NULL,
    message BINARY(16) NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq),
    KEY inbox_expiry (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE user_heads (
    user_id VARCHAR(128) NOT NULL PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    acked_seq BIGINT NOT NULL DEFAULT 0
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE device_cursors (
    user_id VARCHAR(128) NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    acked_seq BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE session_log (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at BIGINT NOT NULL,
    event VARCHAR(8) NOT NULL,
    session_id VARCHAR(32) NOT NULL,
    node VARCHAR(128) NOT NULL,
    user_id VARCHAR(128) NOT NULL,
    device_id VARCHAR(128) NULL,
    code INT NULL,
    KEY session_log_at (at),
    KEY session_log_user (user_id, at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
