//! Values bound to placeholders, the same for both backends.

use chrono::{DateTime, Utc};
use sqlx::Arguments;
use uuid::Uuid;

use crate::error::StoreError;

/// One value bound to a placeholder, of either backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Uuid(Uuid),
    Text(String),
    Time(DateTime<Utc>),
    I64(i64),
    I32(i32),
    Bool(bool),
    Bytes(Vec<u8>),
    /// A typed `NULL` (PostgreSQL checks the type of every parameter).
    Null(NullOf),
}

/// The type of a [`Bind::Null`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullOf {
    Uuid,
    Text,
    Time,
    I64,
}

impl From<Uuid> for Bind {
    fn from(v: Uuid) -> Self {
        Bind::Uuid(v)
    }
}
impl From<String> for Bind {
    fn from(v: String) -> Self {
        Bind::Text(v)
    }
}
impl From<&str> for Bind {
    fn from(v: &str) -> Self {
        Bind::Text(v.to_owned())
    }
}
impl From<&String> for Bind {
    fn from(v: &String) -> Self {
        Bind::Text(v.clone())
    }
}
impl From<Option<&String>> for Bind {
    fn from(v: Option<&String>) -> Self {
        v.map_or(Bind::Null(NullOf::Text), Bind::from)
    }
}
impl From<DateTime<Utc>> for Bind {
    fn from(v: DateTime<Utc>) -> Self {
        Bind::Time(v)
    }
}
impl From<i64> for Bind {
    fn from(v: i64) -> Self {
        Bind::I64(v)
    }
}
impl From<i32> for Bind {
    fn from(v: i32) -> Self {
        Bind::I32(v)
    }
}
impl From<bool> for Bind {
    fn from(v: bool) -> Self {
        Bind::Bool(v)
    }
}
impl From<Vec<u8>> for Bind {
    fn from(v: Vec<u8>) -> Self {
        Bind::Bytes(v)
    }
}
impl From<Option<Uuid>> for Bind {
    fn from(v: Option<Uuid>) -> Self {
        v.map_or(Bind::Null(NullOf::Uuid), Bind::Uuid)
    }
}
impl From<Option<String>> for Bind {
    fn from(v: Option<String>) -> Self {
        v.map_or(Bind::Null(NullOf::Text), Bind::Text)
    }
}
impl From<Option<&str>> for Bind {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Bind::Null(NullOf::Text), Bind::from)
    }
}
impl From<Option<DateTime<Utc>>> for Bind {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        v.map_or(Bind::Null(NullOf::Time), Bind::Time)
    }
}
impl From<Option<i64>> for Bind {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Bind::Null(NullOf::I64), Bind::I64)
    }
}

/// A backend that can bind every [`Bind`].
pub trait Backend: sqlx::Database {
    /// Adds `bind` to an argument list.
    ///
    /// # Errors
    /// A value the backend cannot encode.
    fn add_bind(
        args: &mut Self::Arguments<'_>,
        bind: &Bind,
    ) -> Result<(), sqlx::error::BoxDynError>;
}

macro_rules! backend {
    ($db:ty) => {
        impl Backend for $db {
            fn add_bind(
                args: &mut Self::Arguments<'_>,
                bind: &Bind,
            ) -> Result<(), sqlx::error::BoxDynError> {
                match bind {
                    Bind::Uuid(v) => args.add(*v),
                    Bind::Text(v) => args.add(v.clone()),
                    Bind::Time(v) => args.add(*v),
                    Bind::I64(v) => args.add(*v),
                    Bind::I32(v) => args.add(*v),
                    Bind::Bool(v) => args.add(*v),
                    Bind::Bytes(v) => args.add(v.clone()),
                    Bind::Null(NullOf::Uuid) => args.add(None::<Uuid>),
                    Bind::Null(NullOf::Text) => args.add(None::<String>),
                    Bind::Null(NullOf::Time) => args.add(None::<DateTime<Utc>>),
                    Bind::Null(NullOf::I64) => args.add(None::<i64>),
                }
            }
        }
    };
}
backend!(sqlx::Sqlite);
backend!(sqlx::Postgres);

/// Builds a backend's argument list.
///
/// # Errors
/// A value the backend cannot encode.
pub fn arguments<'q, DB: Backend>(binds: &[Bind]) -> Result<DB::Arguments<'q>, StoreError> {
    let mut args = DB::Arguments::default();
    for bind in binds {
        DB::add_bind(&mut args, bind).map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
    }
    Ok(args)
}
