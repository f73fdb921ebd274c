//! Pagination of admin lists: `limit` (default 50, at most 500) and `offset` query
//! parameters; every list answers `{"data": [...], "limit", "offset", "total", "has_more"}`.

use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};
use utoipa::ToSchema;

use super::AdminError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// A validated window of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub fn new(limit: Option<i64>, offset: Option<i64>) -> Result<Page, AdminError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AdminError::invalid(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let offset = offset.unwrap_or(0);
        if offset < 0 {
            return Err(AdminError::invalid("offset", "offset must be >= 0"));
        }
        Ok(Page { limit, offset })
    }

    pub fn result<T>(self, data: Vec<T>, total: i64) -> Paged<T> {
        let has_more = self.offset.saturating_add(data.len() as i64) < total;
        Paged {
            data,
            limit: self.limit,
            offset: self.offset,
            total,
            has_more,
        }
    }
}

/// Runs a list query (`select`, ordered, without LIMIT/OFFSET) for `page` together with
/// its `count` query, both taking the `filters` parameters, pipelined on one connection.
pub(crate) async fn fetch(
    client: &impl GenericClient,
    select: &str,
    count: &str,
    filters: &[&(dyn ToSql + Sync)],
    page: Page,
) -> Result<(Vec<Row>, i64), AdminError> {
    let select = format!(
        "{select} LIMIT ${} OFFSET ${}",
        filters.len() + 1,
        filters.len() + 2
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = filters.to_vec();
    params.push(&page.limit);
    params.push(&page.offset);
    let (rows, total) = tokio::try_join!(
        client.query(select.as_str(), &params),
        client.query_one(count, filters)
    )?;
    Ok((rows, total.try_get(0)?))
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Paged<T> {
    pub data: Vec<T>,
    /// The page size used.
    pub limit: i64,
    /// How many items were skipped.
    pub offset: i64,
    /// How many items match the filters in all.
    pub total: i64,
    /// Whether items follow this page.
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_offsets() {
        assert_eq!(
            Page::new(None, None).unwrap(),
            Page {
                limit: 50,
                offset: 0
            }
        );
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(Some(501), None).is_err());
        assert!(Page::new(Some(500), Some(3)).is_ok());
        assert!(Page::new(None, Some(-1)).is_err());
        let page = Page::new(Some(2), Some(2)).unwrap().result(vec![1, 2], 5);
        assert!(page.has_more);
        let page = Page::new(Some(2), Some(4)).unwrap().result(vec![5], 5);
        assert!(!page.has_more);
    }
}
