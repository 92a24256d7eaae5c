namespace Broker.Storage.Errors;

/// <summary>
/// Every failure the broker reports, with a stable numeric code (docs/errors.md). Codes are never reused or
/// renumbered: clients may switch on them. The server maps each code to one gRPC status in one place.
/// </summary>
public enum BrokerErrorCode
{
    /// <summary>No error.</summary>
    None = 0,

    /// <summary>The request is malformed: a missing field, a value out of range, a wrong first stream message.</summary>
    InvalidRequest = 1000,
    /// <summary>The topic does not exist.</summary>
    TopicNotFound = 1001,
    /// <summary>A topic or group name breaks the naming rules.</summary>
    InvalidName = 1002,
    /// <summary>A topic with that name exists already.</summary>
    TopicAlreadyExists = 1003,
    /// <summary>One message (key + headers + payload) is larger than the configured limit.</summary>
    MessageTooLarge = 1004,
    /// <summary>A publish carried no messages.</summary>
    EmptyBatch = 1005,
    /// <summary>A batch is larger than the configured batch limit.</summary>
    BatchTooLarge = 1006,
    /// <summary>A group with that name exists already on the topic.</summary>
    GroupAlreadyExists = 1007,
    /// <summary>One request message is larger than the broker accepts (its MaxRequestBytes).</summary>
    RequestTooLarge = 1008,
    /// <summary>The consumer group does not exist on the topic (never created, or deleted).</summary>
    GroupNotFound = 1009,
    /// <summary>An offset outside what the topic stores (below its first message or past its next offset).</summary>
    OffsetOutOfRange = 1010,
    /// <summary>The group has consumers subscribed and the operation (delete without force) needs it idle.</summary>
    GroupInUse = 1011,

    /// <summary>A settle request names a delivery the group does not know (never delivered, or the offset is unknown).</summary>
    UnknownDelivery = 1100,
    /// <summary>A settle request carries the token of an earlier delivery attempt, or the message is already settled.</summary>
    StaleDeliveryToken = 1101,

    /// <summary>The storage device failed; nothing of the request was acknowledged. The topic is reopened on a later use.</summary>
    StorageFailure = 1200,
    /// <summary>The broker is shutting down or the topic is being deleted.</summary>
    ShuttingDown = 1201,
    /// <summary>The disk is full; nothing of the request was acknowledged. Publishing works again once space is freed.</summary>
    DiskFull = 1202,
    /// <summary>The group was reset (or moved by a purge or retention) while this consumer was subscribed: subscribe again.</summary>
    GroupReset = 1203,

    /// <summary>The call carries no API key, or one the broker does not know (never created, revoked, or mistyped).</summary>
    Unauthenticated = 1300,
    /// <summary>The call's API key has no grant for what it asks.</summary>
    PermissionDenied = 1301,
    /// <summary>No API key has that id.</summary>
    ApiKeyNotFound = 1302,
    /// <summary>The client holds as many streams open as the broker allows one client (MaxStreamsPerClient).</summary>
    TooManyStreams = 1303,
}
