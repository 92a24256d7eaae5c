using System.Diagnostics;
using Broker.Storage.Errors;
using global::Grpc.Core;
using ProtoError = Broker.Protocol.V1.Error;

namespace Broker.Server.Grpc;

/// <summary>
/// The one place where broker errors become gRPC statuses (docs/errors.md). A whole-call failure is an
/// <see cref="RpcException"/> with a <c>broker-error-code</c> trailer; a failure of one item inside a stream is an
/// <see cref="ProtoError"/> with the same status and code.
/// </summary>
public static class BrokerStatus
{
    /// <summary>Trailer carrying the stable <see cref="BrokerErrorCode"/> number.</summary>
    public const string ErrorCodeTrailer = "broker-error-code";

    /// <summary>The gRPC status a broker error maps to.</summary>
    public static StatusCode ToStatusCode(BrokerErrorCode code) => code switch
    {
        BrokerErrorCode.InvalidRequest => StatusCode.InvalidArgument,
        BrokerErrorCode.InvalidName => StatusCode.InvalidArgument,
        BrokerErrorCode.EmptyBatch => StatusCode.InvalidArgument,
        BrokerErrorCode.MessageTooLarge => StatusCode.InvalidArgument,
        BrokerErrorCode.BatchTooLarge => StatusCode.InvalidArgument,
        BrokerErrorCode.TopicNotFound => StatusCode.NotFound,
        BrokerErrorCode.TopicAlreadyExists => StatusCode.AlreadyExists,
        BrokerErrorCode.GroupAlreadyExists => StatusCode.AlreadyExists,
        BrokerErrorCode.UnknownDelivery => StatusCode.NotFound,
        BrokerErrorCode.StaleDeliveryToken => StatusCode.FailedPrecondition,
        BrokerErrorCode.StorageFailure => StatusCode.Unavailable,
        BrokerErrorCode.ShuttingDown => StatusCode.Unavailable,
        _ => StatusCode.Internal,
    };

    /// <summary>A broker error as a whole-call failure.</summary>
    public static RpcException ToRpcException(BrokerErrorCode code, string message) =>
        new(new Status(ToStatusCode(code), message), new Metadata { { ErrorCodeTrailer, ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture) } });

    /// <summary>A broker error as the failure of one stream item.</summary>
    public static ProtoError ToError(BrokerErrorCode code, string message) =>
        new() { StatusCode = (int)ToStatusCode(code), ErrorCode = (int)code, Message = message };

    /// <summary>Any failure of one stream item; unexpected ones hide their internals.</summary>
    public static ProtoError ToError(Exception error) => error switch
    {
        BrokerException broker => ToError(broker.Code, broker.Message),
        _ => new ProtoError { StatusCode = (int)StatusCode.Internal, Message = "internal error; see the broker's log" },
    };

    /// <summary>Throws a malformed-request failure.</summary>
    [StackTraceHidden]
    public static RpcException InvalidRequest(string message) => ToRpcException(BrokerErrorCode.InvalidRequest, message);
}
