using System.Collections.Concurrent;
using System.Globalization;
using Broker.Server.Hosting;
using Broker.Storage.Errors;
using global::Grpc.Core;
using global::Grpc.Core.Interceptors;

namespace Broker.Server.Grpc;

/// <summary>
/// Caps the streams one client holds open at once (<see cref="BrokerOptions.MaxStreamsPerClient"/>): a client is its
/// API key, or its IP address when keys are off. Each open stream holds buffers and, for a consumer, leases; a client
/// opening streams without end is refused with RESOURCE_EXHAUSTED (error 1303) while every other client goes on.
/// Kestrel's own limit, streams per connection, does not stop a client that opens more connections. Runs inside
/// <see cref="AuthInterceptor"/>, which names the caller.
/// </summary>
internal sealed class StreamLimitInterceptor(BrokerOptions options) : Interceptor
{
    private readonly ConcurrentDictionary<string, int> _open = new(StringComparer.Ordinal);

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        string client = Enter(context);
        try
        {
            return await continuation(requestStream, context).ConfigureAwait(false);
        }
        finally
        {
            Exit(client);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        string client = Enter(context);
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        finally
        {
            Exit(client);
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        string client = Enter(context);
        try
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
        }
        finally
        {
            Exit(client);
        }
    }

    /// <summary>How many streams <paramref name="client"/> holds open now (tests read it).</summary>
    internal int OpenStreams(string client) => _open.GetValueOrDefault(client);

    private string Enter(ServerCallContext context)
    {
        string client = AuthInterceptor.CallerOf(context).KeyId
            ?? "ip:" + (context.GetHttpContext().Connection.RemoteIpAddress?.ToString() ?? "unknown");
        int limit = options.MaxStreamsPerClient;
        while (true)
        {
            int current = _open.GetValueOrDefault(client);
            if (current >= limit)
            {
                throw new BrokerException(BrokerErrorCode.TooManyStreams,
                    string.Create(CultureInfo.InvariantCulture, $"this client holds {current} streams open; MaxStreamsPerClient is {limit}: close some first"));
            }
            if (current == 0 ? _open.TryAdd(client, 1) : _open.TryUpdate(client, current + 1, current))
                return client;
        }
    }

    private void Exit(string client)
    {
        while (true)
        {
            int current = _open.GetValueOrDefault(client);
            if (current <= 1 ? _open.TryRemove(KeyValuePair.Create(client, current)) : _open.TryUpdate(client, current - 1, current))
                return;
        }
    }
}
