using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.IO.Pipelines;
using Broker.Server.Hosting;
using global::Grpc.AspNetCore.Server;
using global::Grpc.Core;

namespace Broker.Server.Grpc;

/// <summary>
/// Checks the gRPC framing of a unary request (1-byte compressed flag, 4-byte big-endian length, the message, nothing
/// after it) before grpc-dotnet reads it, and refuses a broken one with INVALID_ARGUMENT (error 1000), or
/// RESOURCE_EXHAUSTED (error 1008) for a message over <see cref="BrokerOptions.MaxRequestBytes"/>. Why a middleware:
/// grpc-dotnet reads a unary request before any interceptor, and reports a truncated one as INTERNAL "Incomplete
/// message.", and an unknown flag as UNKNOWN with an error-level log. The check examines the bytes grpc-dotnet would
/// buffer anyway and consumes none of them; streaming calls are checked as they read (<see cref="ErrorInterceptor"/>).
/// </summary>
internal sealed partial class UnaryRequestGuard(RequestDelegate next, BrokerOptions options, ILogger<UnaryRequestGuard> logger)
{
    private const int HeaderLength = 5;

    public Task InvokeAsync(HttpContext context)
    {
        if (context.GetEndpoint()?.Metadata.GetMetadata<GrpcMethodMetadata>() is not { Method.Type: MethodType.Unary } grpc
            || context.Request.ContentType?.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase) != true)
        {
            return next(context);
        }
        return CheckThenCallAsync(context, grpc.Method.FullName);
    }

    private async Task CheckThenCallAsync(HttpContext context, string method)
    {
        RpcException? refusal;
        try
        {
            refusal = await FindProblemAsync(context.Request.BodyReader, context.Request.Headers.ContainsKey("grpc-encoding"), context.RequestAborted)
                .ConfigureAwait(false);
        }
        catch (Exception error) when (error is OperationCanceledException or IOException || context.RequestAborted.IsCancellationRequested)
        {
            // The client went away while sending: there is nobody to answer.
            return;
        }
        if (refusal is null)
        {
            await next(context).ConfigureAwait(false);
            return;
        }
        Log.Refused(logger, method, refusal.Status.Detail);
        WriteTrailersOnly(context.Response, refusal);
    }

    /// <summary>Waits for the whole request body, examining it without consuming; null when its framing is sound.</summary>
    private async Task<RpcException?> FindProblemAsync(PipeReader body, bool hasEncoding, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await body.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            var problem = Check(buffer, result.IsCompleted, hasEncoding, options.MaxRequestBytes);
            if (problem is not null || result.IsCompleted)
            {
                // Nothing consumed and nothing marked examined: grpc-dotnet reads the same bytes at once.
                body.AdvanceTo(buffer.Start);
                return problem;
            }
            body.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static RpcException? Check(in ReadOnlySequence<byte> buffer, bool complete, bool hasEncoding, int maxRequestBytes)
    {
        if (buffer.Length < HeaderLength)
            return complete ? BrokerStatus.MalformedFrame($"the request body ended after {buffer.Length} bytes, inside the 5-byte message header") : null;
        Span<byte> header = stackalloc byte[HeaderLength];
        buffer.Slice(0, HeaderLength).CopyTo(header);
        byte flag = header[0];
        if (flag > 1)
            return BrokerStatus.MalformedFrame($"the compressed flag is {flag}; only 0 and 1 exist");
        if (flag == 1 && !hasEncoding)
            return BrokerStatus.MalformedFrame("the message is marked compressed but the request names no grpc-encoding");
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > maxRequestBytes)
            return BrokerStatus.RequestTooLarge(length, maxRequestBytes);
        long whole = HeaderLength + (long)length;
        if (buffer.Length > whole)
            return BrokerStatus.MalformedFrame("the request body carries data after its message; a unary call takes exactly one");
        if (complete && buffer.Length < whole)
            return BrokerStatus.MalformedFrame($"the request body ended after {buffer.Length - HeaderLength} of the message's {length} bytes");
        return null;
    }

    /// <summary>A gRPC "trailers-only" answer: the status and the broker error code in the response headers.</summary>
    private static void WriteTrailersOnly(HttpResponse response, RpcException refusal)
    {
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/grpc";
        response.Headers["grpc-status"] = ((int)refusal.StatusCode).ToString(CultureInfo.InvariantCulture);
        response.Headers["grpc-message"] = PercentEncode(refusal.Status.Detail);
        foreach (var entry in refusal.Trailers)
            response.Headers[entry.Key] = entry.Value;
    }

    // grpc-message carries printable ASCII as is and percent-encodes the rest (the gRPC HTTP/2 protocol spec).
    private static string PercentEncode(string message) =>
        message.All(c => c is >= ' ' and <= '~' and not '%') ? message : Uri.EscapeDataString(message);

    private static partial class Log
    {
        [LoggerMessage(EventId = 2350, Level = LogLevel.Information, Message = "Refused a malformed {Method} request: {Problem}")]
        public static partial void Refused(ILogger logger, string method, string problem);
    }
}
