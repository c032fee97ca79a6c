-- The schema at version 4 (migrations 1 to 4 of src/db.rs, frozen), for
-- the upgrade test. db.rs's tests check it still matches those migrations.
CREATE TABLE models (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL CHECK (version >= 1),
        description TEXT NOT NULL,
        format      TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        created     TEXT NOT NULL,
        parent_id   INTEGER REFERENCES models(id) ON DELETE RESTRICT,
        spec        TEXT NOT NULL,
        UNIQUE (name, version)
    );
    CREATE INDEX models_parent ON models(parent_id);
    CREATE TABLE model_tags (
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (model_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX model_tags_key ON model_tags(key, value);
    CREATE TABLE model_properties (
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (model_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE model_blobs (
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        sha256   TEXT NOT NULL,
        role     TEXT NOT NULL CHECK (role IN ('model', 'labels')),
        PRIMARY KEY (model_id, role)
    ) WITHOUT ROWID;
    CREATE INDEX model_blobs_sha256 ON model_blobs(sha256);
    CREATE TABLE pending (
        id       INTEGER PRIMARY KEY,
        pid      INTEGER NOT NULL,
        started  INTEGER NOT NULL,
        sha256   TEXT,
        tmp_path TEXT NOT NULL UNIQUE
    );
CREATE TABLE service_keys (
        service TEXT NOT NULL,
        slot    TEXT NOT NULL CHECK (slot IN ('primary', 'secondary')),
        sha256  TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY (service, slot)
    ) WITHOUT ROWID;
CREATE TABLE model_reports (
        model_id INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
        report   TEXT NOT NULL CHECK (json_valid(report))
    );
CREATE TABLE operations (
        id       TEXT PRIMARY KEY,
        kind     TEXT NOT NULL CHECK (kind IN ('convert')),
        args     TEXT NOT NULL CHECK (json_valid(args)),
        status   TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        pid      INTEGER NOT NULL CHECK (pid >= 0),
        started  TEXT NOT NULL,
        finished TEXT,
        progress TEXT,
        result   TEXT CHECK (result IS NULL OR json_valid(result)),
        error    TEXT
    );
