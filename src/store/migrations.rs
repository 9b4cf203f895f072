//! The schema migrations, compiled into the binary.
//!
//! The SQL lives in `migrations/` at the repository root, one `<VERSION>_<DESCRIPTION>.sql`
//! file per step, the layout `sqlx migrate` and `sqlx::migrate!` use. This crate builds sqlx
//! without its `macros` feature, so `sqlx::migrate!` is not available; instead each file is
//! embedded with `include_str!` and handed to sqlx's [`Migrator`] through a
//! [`MigrationSource`]. The result is the same as `migrate!`: one binary that needs no files
//! beside it, and the same `_sqlx_migrations` bookkeeping (version, SHA-384 checksum), so
//! `sqlx migrate info` reads a ctibridge database correctly.
//!
//! Adding a migration: add the file **and** a line to [`MIGRATIONS`]; a unit test fails when
//! the two disagree.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// `(version, description, sql)` of every migration, in version order.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "calls", include_str!("../../migrations/0001_calls.sql")),
    (
        2,
        "checkpoint snapshot",
        include_str!("../../migrations/0002_checkpoint_snapshot.sql"),
    ),
    (
        3,
        "dial requests",
        include_str!("../../migrations/0003_dial_requests.sql"),
    ),
    (
        4,
        "webhook outbox",
        include_str!("../../migrations/0004_webhook_outbox.sql"),
    ),
    (
        5,
        "readiness",
        include_str!("../../migrations/0005_readiness.sql"),
    ),
];

/// [`MIGRATIONS`] as a sqlx migration source.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The migrator for the embedded migrations.
pub(crate) async fn migrator() -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded).await
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;
    use std::path::Path;

    /// Every file in `migrations/` is registered, under the version and description sqlx's
    /// own tools would derive from its name, with the same text.
    #[test]
    fn embedded_list_matches_the_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
            .expect("migrations directory")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .map(|p| {
                let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
                let (version, description) = stem.split_once('_').expect("<VERSION>_<DESC>");
                (
                    version.parse().expect("numeric version"),
                    description.replace('_', " "),
                    std::fs::read_to_string(&p).expect("migration text"),
                )
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(i64, String, String)> = MIGRATIONS
            .iter()
            .map(|&(v, d, s)| (v, d.to_owned(), s.to_owned()))
            .collect();
        assert_eq!(embedded, on_disk);
    }
}
