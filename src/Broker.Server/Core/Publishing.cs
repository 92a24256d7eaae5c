using Broker.Server.Hosting;
using Broker.Server.Security;
using Broker.Storage.Topics;

namespace Broker.Server.Core;

/// <summary>Whether a publish may create the topic it names (gRPC, with AutoCreateTopics) or needs it to exist (an SQS queue).</summary>
internal enum TopicLookup
{
    CreateWhenAllowed,
    ExistingOnly,
}

/// <summary>
/// The publish use case, one for every front end (gRPC Publish and PublishStream, SQS SendMessage and
/// SendMessageBatch): the caller's grant, its key's publish rate, the topic, the append inside the broker's publish
/// span. A front end turns its request into <see cref="AppendMessage"/>s and the result into its answer; what a publish
/// is allowed and what it costs are decided here once, so a limit added here holds for every protocol.
/// </summary>
internal sealed class Publishing(TopicResolver topics)
{
    /// <summary>
    /// The topic <paramref name="caller"/> may publish <paramref name="count"/> messages to, once its grant is checked
    /// (PermissionDenied, 1301) and its key's publish rate lets them through (a wait, never a refusal). Split from
    /// <see cref="Append"/> so a stream can admit its next batch before appending it, in arrival order.
    /// </summary>
    public ValueTask<Topic> AdmitAsync(Caller caller, string topic, int count, TopicLookup lookup, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Publish, topic);
        var throttle = caller.ThrottlePublishAsync(count, cancellationToken);
        return throttle.IsCompletedSuccessfully ? Resolve(topic, lookup, cancellationToken) : ResolveAfterAsync(throttle, topic, lookup, cancellationToken);
    }

    /// <summary>
    /// Appends <paramref name="messages"/> to <paramref name="topic"/>; the task completes once they are durable. The
    /// publish span covers the append (not the wait for durability), and messages without a trace context get its.
    /// </summary>
    public static Task<AppendResult> Append(Topic topic, IReadOnlyList<AppendMessage> messages)
    {
        using var span = BrokerTracing.StartPublish(topic.Name, messages.Count);
        return topic.AppendAsync(span is null ? messages : BrokerTracing.WithTraceContext([.. messages], span));
    }

    private ValueTask<Topic> Resolve(string topic, TopicLookup lookup, CancellationToken cancellationToken) =>
        lookup == TopicLookup.CreateWhenAllowed ? topics.GetTopicAsync(topic, cancellationToken) : topics.GetExistingAsync(topic, cancellationToken);

    private async ValueTask<Topic> ResolveAfterAsync(ValueTask throttle, string topic, TopicLookup lookup, CancellationToken cancellationToken)
    {
        await throttle.ConfigureAwait(false);
        return await Resolve(topic, lookup, cancellationToken).ConfigureAwait(false);
    }
}
