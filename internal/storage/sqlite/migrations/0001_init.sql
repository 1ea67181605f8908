-- One table per store shape, keyed by the store name, so that new features
-- need no schema change.

CREATE TABLE storage_kv (
	store    TEXT NOT NULL,
	username TEXT NOT NULL,
	value    BLOB NOT NULL,
	PRIMARY KEY (store, username)
);
CREATE INDEX storage_kv_user ON storage_kv (username);

CREATE TABLE storage_map (
	store    TEXT NOT NULL,
	username TEXT NOT NULL,
	key      TEXT NOT NULL,
	value    BLOB NOT NULL,
	PRIMARY KEY (store, username, key)
);
CREATE INDEX storage_map_user ON storage_map (username);

-- seq is AUTOINCREMENT so that a deleted item's number is never reused: it
-- breaks ties between equal times, and reuse would reorder the archive.
CREATE TABLE storage_archive (
	seq      INTEGER PRIMARY KEY AUTOINCREMENT,
	store    TEXT NOT NULL,
	username TEXT NOT NULL,
	id       TEXT NOT NULL,
	peer     TEXT NOT NULL,
	ts       INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
	data     BLOB NOT NULL
);
CREATE UNIQUE INDEX storage_archive_id ON storage_archive (store, username, id);
CREATE INDEX storage_archive_time ON storage_archive (store, username, ts, seq);
CREATE INDEX storage_archive_peer ON storage_archive (store, username, peer, ts, seq);
CREATE INDEX storage_archive_age ON storage_archive (store, ts);
CREATE INDEX storage_archive_user ON storage_archive (username);
