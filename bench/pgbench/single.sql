-- One request: admission, then capture (one statement each, as a request alone).
\set r random(1, 9000000000000000000)
SELECT * FROM sb_admit('bench', 'r' || :r, 0.01, interval '300 s', 'key-k1', 100000000, 'provider-1', 100000000, 100, 100000000000);
SELECT * FROM sb_capture('r' || :r, 'bench', 0.0000078, 'capture', pgb_usage(), pgb_bill());
