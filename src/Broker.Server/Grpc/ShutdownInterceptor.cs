using Broker.Server.Hosting;
using Broker.Storage.Errors;
using global::Grpc.Core;
using global::Grpc.Core.Interceptors;

namespace Broker.Server.Grpc;

/// <summary>
/// Counts every call in and out so the drain can wait for them, and refuses a call that starts once the drain has
/// begun. It runs inside <see cref="ErrorInterceptor"/>, which turns the refusal into UNAVAILABLE with error 1201.
/// </summary>
internal sealed class ShutdownInterceptor(ShutdownDrain drain) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Enter();
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        finally
        {
            drain.ExitCall();
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Enter();
        try
        {
            return await continuation(requestStream, context).ConfigureAwait(false);
        }
        finally
        {
            drain.ExitCall();
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Enter();
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        finally
        {
            drain.ExitCall();
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Enter();
        try
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
        }
        finally
        {
            drain.ExitCall();
        }
    }

    private void Enter()
    {
        if (!drain.TryEnterCall())
            throw new BrokerException(BrokerErrorCode.ShuttingDown, "the broker is shutting down; retry against it once it is back");
    }
}
