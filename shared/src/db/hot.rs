//! [`HotClient`]: the hot path's statements (admission, capture) in one round trip each,
//! prepared once per pooled connection, so PostgreSQL neither parses nor plans them again
//! on every request (about a tenth of its CPU per request before, measured with
//! `scripts/bench`).

use std::future::Future;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Row};

/// A client that runs a statement with typed parameters and returns its one row.
pub trait HotClient: Sync {
    fn query_hot_one(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> impl Future<Output = Result<Row, Error>> + Send;

    /// Same, for a statement that returns any number of rows (the batch functions).
    fn query_hot(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send;
}

/// A pooled connection: the statement is prepared on first use and cached with the
/// connection (Parse and Describe once; then Bind and Execute, one round trip).
impl HotClient for deadpool_postgres::ClientWrapper {
    async fn query_hot_one(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, Error> {
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        let statement = self.prepare_typed_cached(sql, &types).await?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(value, _)| *value).collect();
        self.query_one(&statement, &values).await
    }

    async fn query_hot(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        let statement = self.prepare_typed_cached(sql, &types).await?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(value, _)| *value).collect();
        self.query(&statement, &values).await
    }
}

/// A plain connection or transaction: an unnamed statement (parsed each time).
impl HotClient for tokio_postgres::Client {
    async fn query_hot_one(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, Error> {
        self.query_typed_one(sql, params).await
    }

    async fn query_hot(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        self.query_typed(sql, params).await
    }
}

impl HotClient for tokio_postgres::Transaction<'_> {
    async fn query_hot_one(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, Error> {
        self.query_typed_one(sql, params).await
    }

    async fn query_hot(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        self.query_typed(sql, params).await
    }
}
