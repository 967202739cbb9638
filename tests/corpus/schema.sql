-- Tables the bypass corpus refers to. The end-to-end corpus run creates them in a
-- throw-away schema (search_path set to it) before running the allowed statements.
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text,
    ssn text,
    country text DEFAULT 'DE',
    created_at timestamptz DEFAULT now()
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id int REFERENCES customers (id),
    total numeric(12, 2) NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'new',
    created_at timestamptz DEFAULT now()
);
CREATE TABLE notes (id serial PRIMARY KEY, body text, pg_read_file text);
CREATE TABLE t (id int PRIMARY KEY, a int, b text, x int);
CREATE TABLE s (id int PRIMARY KEY, a int);
INSERT INTO customers (name, email, ssn) VALUES
    ('Ada', 'ada@example.com', '123-45-6789'),
    ('Bob', 'bob@example.com', '987-65-4321');
INSERT INTO orders (customer_id, total, status) VALUES (1, 10.5, 'new'), (2, 99, 'paid');
INSERT INTO t VALUES (1, 1, 'one', 1), (2, 2, 'two', 2);
INSERT INTO s VALUES (1, 10), (3, 30);
INSERT INTO notes (body, pg_read_file) VALUES ('hello', 'column, not a function');
