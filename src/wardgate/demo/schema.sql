CREATE TABLE customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    card_number text,
    ssn         text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id          serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    total_cents int NOT NULL,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, card_number, ssn) VALUES
 ('Ada Lovelace',    'ada@analytical.example',   '4111 1111 1111 1111', '123-45-6789'),
 ('Grace Hopper',    'grace.hopper@navy.example', '5500-0000-0000-0004', '219-09-9999'),
 ('Alan Turing',     'alan@bletchley.example',   '3782 822463 10005',   '078-05-1120'),
 ('Katherine Johnson','kj@nasa.example',         '6011000990139424',    '457-55-5462');
INSERT INTO orders (customer_id, total_cents, status) VALUES
 (1, 1999, 'paid'), (1, 4500, 'cancelled'), (2, 12000, 'paid'),
 (3, 899, 'cancelled'), (4, 30500, 'shipped'), (2, 2500, 'paid');
