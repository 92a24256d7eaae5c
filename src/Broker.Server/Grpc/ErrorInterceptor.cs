using Broker.Server.Hosting;
using Microsoft.AspNetCore.Connections;
using Broker.Storage.Errors;
using global::Grpc.Core;
using global::Grpc.Core.Interceptors;

namespace Broker.Server.Grpc;

/// <summary>
/// Turns what a handler throws into a status, for every RPC: broker errors keep their meaning, a call cancelled by
/// its client stays a cancellation, a call cut short by the shutdown is ShuttingDown (1201) and no error, and anything
/// unexpected becomes INTERNAL without leaking internals (it is logged).
/// A request stream a client breaks (a truncated or oversized frame, an unknown compressed flag) fails the call with
/// INVALID_ARGUMENT or RESOURCE_EXHAUSTED and a broker error code, as a unary request does in <see cref="UnaryRequestGuard"/>.
/// </summary>
internal sealed partial class ErrorInterceptor(ShutdownDrain drain, ILogger<ErrorInterceptor> logger, BrokerOptions options) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (Exception error) when (error is not RpcException)
        {
            throw Map(error, context);
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(new CheckedRequestStream<TRequest>(requestStream, options.MaxRequestBytes), context).ConfigureAwait(false);
        }
        catch (Exception error) when (error is not RpcException)
        {
            throw Map(error, context);
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(new CheckedRequestStream<TRequest>(requestStream, options.MaxRequestBytes), responseStream, context).ConfigureAwait(false);
        }
        catch (Exception error) when (error is not RpcException)
        {
            throw Map(error, context);
        }
    }

    private RpcException Map(Exception error, ServerCallContext context)
    {
        switch (error)
        {
            case BrokerException broker:
                return BrokerStatus.ToRpcException(broker.Code, broker.Message);
            case OperationCanceledException when context.CancellationToken.IsCancellationRequested && !drain.Draining.IsCancellationRequested:
                return new RpcException(new Status(StatusCode.Cancelled, "the call was cancelled"));
            case OperationCanceledException or IOException when drain.Draining.IsCancellationRequested:
                // The drain stopped the call, or Kestrel cut its connection at the end of the stop: a shutdown, not a
                // failure. The status carries the code in case the client can still read it.
                Log.CutByShutdown(logger, context.Method);
                return BrokerStatus.ToRpcException(BrokerErrorCode.ShuttingDown, "the broker is shutting down");
            case ConnectionResetException or ConnectionAbortedException:
                // The client reset the stream or dropped the connection; this can surface from a read before the call's
                // token is cancelled. Nobody is left to answer, and it is no fault of the broker's.
                Log.ClientGone(logger, context.Method, error.Message);
                return new RpcException(new Status(StatusCode.Cancelled, "the client went away"));
            default:
                Log.UnexpectedError(logger, context.Method, error);
                return new RpcException(new Status(StatusCode.Internal, "internal error; see the broker's log"));
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2001, Level = LogLevel.Error, Message = "Unexpected error in {Method}")]
        public static partial void UnexpectedError(ILogger logger, string method, Exception error);

        [LoggerMessage(EventId = 2002, Level = LogLevel.Debug, Message = "{Method} ended by the shutdown")]
        public static partial void CutByShutdown(ILogger logger, string method);

        [LoggerMessage(EventId = 2003, Level = LogLevel.Debug, Message = "Client went away during {Method}: {Reason}")]
        public static partial void ClientGone(ILogger logger, string method, string reason);
    }
}

/// <summary>
/// A request stream whose read failures that are the client's fault (see <see cref="BrokerStatus.ForUnreadableFrame"/>)
/// carry a broker status and error code. A read that completes at once costs no extra allocation.
/// </summary>
internal sealed class CheckedRequestStream<T>(IAsyncStreamReader<T> inner, int maxRequestBytes) : IAsyncStreamReader<T>
{
    public T Current => inner.Current;

    public Task<bool> MoveNext(CancellationToken cancellationToken)
    {
        var next = inner.MoveNext(cancellationToken);
        return next.IsCompletedSuccessfully ? next : AwaitAsync(next);
    }

    private async Task<bool> AwaitAsync(Task<bool> next)
    {
        try
        {
            return await next.ConfigureAwait(false);
        }
        catch (Exception error) when (BrokerStatus.ForUnreadableFrame(error, maxRequestBytes) is { } refusal)
        {
            throw refusal;
        }
        catch (IOException error)
        {
            // Kestrel reports a client's RST_STREAM on the request body as a plain IOException ("The client reset the
            // request stream"), sometimes before the call's token is cancelled: the client went away, the broker is fine.
            throw new ConnectionAbortedException(error.Message, error);
        }
    }
}
