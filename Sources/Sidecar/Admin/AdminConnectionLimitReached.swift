/// An admin connection past ``AdminServer/maxConnections``: failing its initializer makes
/// ServerBootstrap close it as soon as it is accepted.
struct AdminConnectionLimitReached: Error {}
