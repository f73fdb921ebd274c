-- The OpenAI Responses API (issue 30).
--
-- A provider flag: an OpenAI-format provider that also serves `/responses` gets Responses
-- requests natively (reasoning items and their encrypted content survive a turn).
ALTER TABLE llm_providers
    ADD COLUMN supports_responses_api boolean NOT NULL DEFAULT false;
ALTER TABLE llm_providers
    ADD CONSTRAINT llm_providers_responses_api_openai
    CHECK (NOT supports_responses_api OR api_format = 'openai');

-- Stored responses: written before the answer ends (`store`, the default), so that
-- `previous_response_id` works on the very next request, from any instance. Each row keeps
-- the input items of its own turn, the output items, and the id of the response it
-- continued: a continuation's whole input is the chain's items, oldest first.
CREATE TABLE responses (
    id                   text PRIMARY KEY CHECK (id LIKE 'resp_%' AND length(id) <= 100),
    user_id              text NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    previous_response_id text REFERENCES responses (id) ON DELETE SET NULL,
    model                text NOT NULL,
    instructions         text,
    -- This turn's input items (the Responses API's `input`, as items), and the output.
    input_items          jsonb NOT NULL CHECK (jsonb_typeof(input_items) = 'array'),
    output_items         jsonb NOT NULL CHECK (jsonb_typeof(output_items) = 'array'),
    -- The whole Response object as answered (`GET /v1/responses/{id}`).
    response             jsonb NOT NULL,
    request_id           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL
);
CREATE INDEX responses_user_idx ON responses (user_id, created_at);
CREATE INDEX responses_expiry_idx ON responses (expires_at);
