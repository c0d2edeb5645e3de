-- Secondary indexes of projections set aside while they are rebuilt.
--
-- Why: a rebuild writes every row of a projection again. Building an index once
-- from the finished table is much cheaper than updating it row by row, so a rebuild
-- records each secondary index here, drops it, folds the log, and creates it again.
-- A rebuild that is interrupted leaves its rows here, and the next start (or
-- rebuild) creates the indexes again; nothing is lost but time.

CREATE TABLE projection_deferred_indexes (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
