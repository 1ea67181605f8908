-- One table per store shape, keyed by the store name, so that new features
-- need no schema change. Identifiers use the "C" collation: storage compares
-- users and keys byte for byte, as SQLite does, and C-collated btrees are
-- the cheapest to search.

CREATE TABLE storage_kv (
	store    text COLLATE "C" NOT NULL,
	username text COLLATE "C" NOT NULL,
	value    bytea NOT NULL,
	PRIMARY KEY (store, username)
);
CREATE INDEX storage_kv_user ON storage_kv (username);

CREATE TABLE storage_map (
	store    text COLLATE "C" NOT NULL,
	username text COLLATE "C" NOT NULL,
	key      text COLLATE "C" NOT NULL,
	value    bytea NOT NULL,
	PRIMARY KEY (store, username, key)
);
CREATE INDEX storage_map_user ON storage_map (username);

-- seq breaks ties between equal times; identities are never reused.
CREATE TABLE storage_archive (
	seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	store    text COLLATE "C" NOT NULL,
	username text COLLATE "C" NOT NULL,
	id       text COLLATE "C" NOT NULL,
	peer     text COLLATE "C" NOT NULL,
	ts       timestamptz NOT NULL,
	data     bytea NOT NULL
);
CREATE UNIQUE INDEX storage_archive_id ON storage_archive (store, username, id);
CREATE INDEX storage_archive_time ON storage_archive (store, username, ts, seq);
CREATE INDEX storage_archive_peer ON storage_archive (store, username, peer, ts, seq);
CREATE INDEX storage_archive_age ON storage_archive (store, ts);
CREATE INDEX storage_archive_user ON storage_archive (username);
