using System.Diagnostics;
using System.Globalization;
using Broker.Storage.Errors;
using Google.Protobuf;
using global::Grpc.Core;
using ProtoError = Broker.Protocol.V1.Error;

namespace Broker.Server.Grpc;

/// <summary>
/// The one place where broker errors become gRPC statuses (docs/errors.md); the code-to-status map itself is generated
/// from proto/broker/v1/errors.json (BrokerStatus.Codes.g.cs). A whole-call failure is an
/// <see cref="RpcException"/> with a <c>broker-error-code</c> trailer; a failure of one item inside a stream is an
/// <see cref="ProtoError"/> with the same status and code.
/// </summary>
public static partial class BrokerStatus
{
    /// <summary>Trailer carrying the stable <see cref="BrokerErrorCode"/> number.</summary>
    public const string ErrorCodeTrailer = "broker-error-code";

    /// <summary>A broker error as a whole-call failure.</summary>
    public static RpcException ToRpcException(BrokerErrorCode code, string message) =>
        new(new Status(ToStatusCode(code), message), new Metadata { { ErrorCodeTrailer, ((int)code).ToString(CultureInfo.InvariantCulture) } });

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

    /// <summary>A request message whose bytes are not the protobuf message the method takes.</summary>
    public static RpcException UnreadableMessage(string messageType, InvalidProtocolBufferException error) =>
        InvalidRequest($"the request is not a valid {messageType} message: {error.Message}");

    /// <summary>A request whose gRPC framing (1-byte flag, 4-byte length, message) is broken.</summary>
    public static RpcException MalformedFrame(string problem) => InvalidRequest($"malformed gRPC request frame: {problem}");

    /// <summary>A request message longer than the broker reads.</summary>
    public static RpcException RequestTooLarge(long length, int maxRequestBytes) =>
        ToRpcException(BrokerErrorCode.RequestTooLarge,
            length < 0
                ? $"the request message is larger than MaxRequestBytes ({maxRequestBytes} bytes)"
                : $"the request message is {length} bytes; MaxRequestBytes is {maxRequestBytes}");

    /// <summary>
    /// What grpc-dotnet throws when it cannot read a request message off a stream (it reports these as INTERNAL, or
    /// RESOURCE_EXHAUSTED without a code, or as an unhandled exception): the client's fault, so INVALID_ARGUMENT or
    /// RESOURCE_EXHAUSTED with a broker error code. Null for anything else.
    /// </summary>
    public static RpcException? ForUnreadableFrame(Exception error, int maxRequestBytes) => error switch
    {
        RpcException { StatusCode: StatusCode.ResourceExhausted } => RequestTooLarge(-1, maxRequestBytes),
        RpcException { StatusCode: StatusCode.Internal } rpc => MalformedFrame(rpc.Status.Detail),
        InvalidDataException data => MalformedFrame(data.Message),
        _ => null,
    };
}
