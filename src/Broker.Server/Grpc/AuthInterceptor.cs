using Broker.Protocol.V1;
using Broker.Server.Hosting;
using Broker.Server.Security;
using Broker.Storage.Errors;
using global::Grpc.Core;
using global::Grpc.Core.Interceptors;

namespace Broker.Server.Grpc;

/// <summary>
/// Authenticates every gRPC call from its <c>authorization: Bearer &lt;key&gt;</c> metadata and checks what it asks
/// against the key's grants (docs/security.md): a unary request when it arrives, a stream's requests as each one is
/// read. Publishing and subscribing are checked by the transport-neutral core (Core/Publishing, Core/Subscribing), the
/// same for every front end; the rules here are the Admin service's. The caller is
/// left in the call's user state for handlers that filter what they show (<see cref="CallerOf"/>). A call whose key is
/// revoked while it runs is aborted. It runs inside <see cref="ErrorInterceptor"/>, which maps its refusals to
/// UNAUTHENTICATED (1300) and PERMISSION_DENIED (1301).
/// </summary>
internal sealed class AuthInterceptor(KeyRing keys, BrokerOptions options) : Interceptor
{
    private const string HealthService = "/grpc.health.v1.Health/";
    private static readonly object CallerKey = typeof(Caller);

    /// <summary>The caller this interceptor authenticated for the call.</summary>
    public static Caller CallerOf(ServerCallContext context) =>
        context.UserState.TryGetValue(CallerKey, out object? caller) ? (Caller)caller
            : throw new InvalidOperationException("the call did not pass the AuthInterceptor");

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        var caller = Enter(context);
        if (caller == Caller.Anyone)
            return await continuation(request, context).ConfigureAwait(false);
        AuthorizeRequest(caller, request!, context.Method);
        using var abort = AbortOnRevocation(caller, context);
        return await continuation(request, context).ConfigureAwait(false);
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var caller = Enter(context);
        if (caller == Caller.Anyone)
            return await continuation(requestStream, context).ConfigureAwait(false);
        using var abort = AbortOnRevocation(caller, context);
        return await continuation(new AuthorizedRequestStream<TRequest>(requestStream, caller, context.Method), context).ConfigureAwait(false);
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var caller = Enter(context);
        if (caller != Caller.Anyone)
            AuthorizeRequest(caller, request!, context.Method);
        using var abort = AbortOnRevocation(caller, context);
        await continuation(request, responseStream, context).ConfigureAwait(false);
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        var caller = Enter(context);
        if (caller == Caller.Anyone)
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
            return;
        }
        using var abort = AbortOnRevocation(caller, context);
        await continuation(new AuthorizedRequestStream<TRequest>(requestStream, caller, context.Method), responseStream, context).ConfigureAwait(false);
    }

    private Caller Enter(ServerCallContext context)
    {
        Caller caller = context.Method.StartsWith(HealthService, StringComparison.Ordinal) && options.IsOpen("health")
            ? Caller.Anyone
            : keys.Authenticate(BearerToken(context.RequestHeaders.GetValue("authorization")));
        context.UserState[CallerKey] = caller;
        return caller;
    }

    /// <summary>The token of an <c>authorization: Bearer &lt;token&gt;</c> header (the scheme in any case); null for anything else.</summary>
    internal static string? BearerToken(string? header) =>
        header is not null && header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header["Bearer ".Length..].Trim() : null;

    private static CancellationTokenRegistration AbortOnRevocation(Caller caller, ServerCallContext context) =>
        caller.Revoked.CanBeCanceled ? caller.Revoked.Register(() => context.GetHttpContext().Abort()) : default;

    /// <summary>
    /// What each request of ours needs. Any other request of this package is refused until it gets its rule here, so a
    /// new RPC cannot ship open by mistake; requests of other services (gRPC reflection) need only a valid key.
    /// </summary>
    internal static void AuthorizeRequest(Caller caller, object request, string method)
    {
        switch (request)
        {
            case PublishRequest:
                // Checked by Core/Publishing for each batch, so that on a stream a batch to a forbidden topic fails
                // alone (as any bad batch does) and the stream goes on.
                break;
            case ConsumeRequest:
                // The subscribe is checked by Core/Subscribing (consume on topic and group, publish on an explicit
                // dead-letter topic); settle frames and stop touch only that stream's deliveries.
                break;
            case CreateTopicRequest or UpdateTopicRequest or PurgeTopicRequest or DeleteTopicRequest or DescribeTopicRequest
                or ListGroupsRequest or CreateGroupRequest or ResetGroupRequest or UpdateGroupRequest or DeleteGroupRequest or PeekRequest:
                // Checked by Core/TopicAdmin (admin on the topic; publish on a dead-letter topic a group names; admin or
                // consume to peek), for SQS's queue actions alike.
                break;
            case RedriveRequest:
                // Checked by Core/DeadLetters, for the web view and SQS alike.
                break;
            case ListTopicsRequest or GetServerStatsRequest:
                // Open to every key: lists show only the topics the key has a grant on; stats are process numbers.
                break;
            case CreateApiKeyRequest or ListApiKeysRequest or RevokeApiKeyRequest:
                caller.Demand(Permission.Keys, "*");
                break;
            case Google.Protobuf.IMessage message when message.Descriptor.File.Package == PublishRequest.Descriptor.File.Package:
                throw new BrokerException(BrokerErrorCode.PermissionDenied, $"{method} has no permission rule; the broker refuses it");
        }
    }

    /// <summary>A request stream whose every request is checked against the caller's grants as it is read.</summary>
    private sealed class AuthorizedRequestStream<T>(IAsyncStreamReader<T> inner, Caller caller, string method) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            var next = inner.MoveNext(cancellationToken);
            if (!next.IsCompletedSuccessfully)
                return CheckAsync(next);
            if (next.Result)
                AuthorizeRequest(caller, inner.Current!, method);
            return next;
        }

        private async Task<bool> CheckAsync(Task<bool> next)
        {
            bool more = await next.ConfigureAwait(false);
            if (more)
                AuthorizeRequest(caller, inner.Current!, method);
            return more;
        }
    }
}
