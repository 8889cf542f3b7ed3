"""Business rules. Services take a Session (the request's transaction) and raise DomainErrors;
they never commit: the unit of work in cloud.db.uow does, once per request."""
