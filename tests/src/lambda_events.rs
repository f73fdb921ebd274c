//! Lambda events converted the way the deployed functions convert them. The template sets
//! `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true` on every API function: lambda_http then takes
//! the REST event's `path`, which API Gateway sends without the stage, as it is. That
//! variable is the one stage-stripping mechanism (issue 33); without it lambda_http would
//! prefix the stage unless the path already starts with it, which a stage named `v1` or
//! `admin` gets wrong.

use std::sync::Once;

/// Sets the template's `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true` in this test process,
/// once, before any event is converted.
pub fn as_deployed() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        // SAFETY: set once, under a Once, by the test process before it converts an event;
        // std's own environment lock serialises it with every std::env read.
        unsafe { std::env::set_var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true") };
    });
}
