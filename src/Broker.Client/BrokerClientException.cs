using Grpc.Core;

namespace Broker.Client;

/// <summary>
/// A failure the broker reported: the gRPC status and the broker's stable error code (docs/errors.md; 0 when the
/// failure did not come from the broker itself, for example a lost connection).
/// </summary>
public sealed class BrokerClientException(StatusCode status, int errorCode, string message, Exception? inner = null)
    : Exception(message, inner)
{
    /// <summary>The gRPC status, for example <see cref="StatusCode.NotFound"/> for an unknown topic.</summary>
    public StatusCode Status { get; } = status;

    /// <summary>The broker's stable error code, for example 1001 for "topic not found".</summary>
    public int ErrorCode { get; } = errorCode;

    /// <summary>The same code, typed: <c>error.Error == BrokerError.TopicNotFound</c>.</summary>
    public BrokerError Error => (BrokerError)ErrorCode;

    internal static BrokerClientException From(RpcException error)
    {
        int code = 0;
        if (error.Trailers.GetValue("broker-error-code") is { } text)
            _ = int.TryParse(text, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out code);
        // grpc-dotnet reports a call the connection could not carry (the broker closed it, for example with GOAWAY as
        // it shut down) as INTERNAL; for a caller it is the broker being unreachable: UNAVAILABLE, safe to retry.
        var status = error.StatusCode == StatusCode.Internal && code == 0 && error.Status.DebugException is HttpRequestException
            ? StatusCode.Unavailable
            : error.StatusCode;
        return new BrokerClientException(status, code, error.Status.Detail, error);
    }

    internal static BrokerClientException ConnectionLost(Exception error) =>
        new(StatusCode.Unavailable, 0, $"the connection to the broker was lost: {error.Message}", error);

    internal static BrokerClientException From(Protocol.V1.Error error) =>
        new((StatusCode)error.StatusCode, error.ErrorCode, error.Message);
}
