"""Storage behind the services: one interface per kind of data, one implementation per
database, chosen once where a connection is opened."""
