using Broker.Protocol.V1;
using Broker.Server.Core;
using Broker.Server.Hosting;
using Broker.Server.Sessions;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using global::Grpc.Core;

namespace Broker.Server.Grpc;

/// <summary>
/// The Consume stream: the first request subscribes, the server confirms with <c>subscribed</c>, then deliveries
/// flow and acks are answered. Everything after the subscribe is the <see cref="ConsumerSession"/>'s job.
/// </summary>
internal sealed partial class ConsumerService(TopicStore store, Subscribing subscribing, ShutdownDrain drain, ILogger<ConsumerService> logger) : Consumer.ConsumerBase
{
    public override async Task Consume(IAsyncStreamReader<ConsumeRequest> requestStream,
        IServerStreamWriter<ConsumeResponse> responseStream, ServerCallContext context)
    {
        if (!await requestStream.MoveNext(context.CancellationToken).ConfigureAwait(false))
            return;
        if (requestStream.Current.KindCase != ConsumeRequest.KindOneofCase.Subscribe)
            throw BrokerStatus.InvalidRequest("the first message of a Consume stream must be 'subscribe'");
        var subscribe = requestStream.Current.Subscribe;
        var spec = new SubscribeSpec(subscribe.Topic, subscribe.Group,
            ProtoConversions.ToStart(subscribe.Start, subscribe.StartOffset, subscribe.StartTimeUnixMs),
            ProtoConversions.ToPolicy(subscribe.GroupSettings),
            (int)Math.Min(subscribe.MaxInFlight, int.MaxValue),
            subscribe.VisibilityTimeoutMs == 0 ? null : TimeSpan.FromMilliseconds(subscribe.VisibilityTimeoutMs));
        var (topic, group, member, created) = await subscribing.JoinAsync(AuthInterceptor.CallerOf(context), spec, context.CancellationToken)
            .ConfigureAwait(false);
        int maxInFlight = member.MaxInFlight;

        var subscribed = new Subscribed
        {
            Topic = topic.Name,
            Group = group.Name,
            MaxInFlight = (uint)maxInFlight,
            GroupCreated = created,
            VisibilityTimeoutMs = (uint)member.VisibilityTimeout.TotalMilliseconds,
        };
        Log.Subscribed(logger, topic.Name, group.Name, maxInFlight);
        var session = new ConsumerSession(topic, group, member, store.Options.MaxAcksPerFrame, drain);
        var end = SessionEnd.Closed;
        drain.ConsumerStarted();
        try
        {
            end = await session.RunAsync(subscribed, requestStream, responseStream, context.CancellationToken).ConfigureAwait(false);
        }
        finally
        {
            drain.ConsumerEnded(cutAtGraceEnd: end == SessionEnd.CutAtGraceEnd);
            Log.Left(logger, topic.Name, group.Name);
        }
        if (topic.StorageFailure is { } failure && !context.CancellationToken.IsCancellationRequested)
            throw BrokerStatus.ToRpcException(failure.Code, $"topic '{topic.Name}': {failure.Message}; subscribe again: unacknowledged deliveries come back");
        if (end != SessionEnd.Closed && !context.CancellationToken.IsCancellationRequested)
            throw BrokerStatus.ToRpcException(BrokerErrorCode.ShuttingDown, "the broker is shutting down; subscribe again once it is back");
        // Reset (also by a purge or retention): UNAVAILABLE, so clients subscribe again and get the new state; deleted: NOT_FOUND.
        if (group.Retirement is { } retired && !topic.Closing.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
            throw BrokerStatus.ToRpcException(retired.Code, retired.Message);
        if (topic.Closing.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
            throw BrokerStatus.ToRpcException(BrokerErrorCode.ShuttingDown, $"topic '{topic.Name}' was deleted or the broker is shutting down");
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2101, Level = LogLevel.Debug, Message = "Consumer subscribed to {Topic}/{Group} with max in flight {MaxInFlight}")]
        public static partial void Subscribed(ILogger logger, string topic, string group, int maxInFlight);

        [LoggerMessage(EventId = 2102, Level = LogLevel.Debug, Message = "Consumer left {Topic}/{Group}")]
        public static partial void Left(ILogger logger, string topic, string group);
    }
}
