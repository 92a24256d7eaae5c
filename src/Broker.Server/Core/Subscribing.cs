using Broker.Server.Security;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Server.Core;

/// <summary>What a consumer asks for when it joins a group, in no protocol's terms.</summary>
/// <param name="Topic">The topic to read.</param>
/// <param name="Group">The consumer group to join (created if new).</param>
/// <param name="Start">Where a new group starts.</param>
/// <param name="Policy">A new group's delivery rules (an existing group keeps its own).</param>
/// <param name="MaxInFlight">Deliveries the consumer holds unsettled at most; 0 for <see cref="Subscribing.DefaultMaxInFlight"/>.</param>
/// <param name="VisibilityTimeout">This consumer's lease, or null for the group's.</param>
internal sealed record SubscribeSpec(string Topic, string Group, GroupStart Start, GroupPolicy Policy, int MaxInFlight, TimeSpan? VisibilityTimeout);

/// <summary>A consumer that joined: its topic, its group (and whether this join created it) and its membership.</summary>
internal sealed record Joined(Topic Topic, ConsumerGroup Group, GroupMember Member, bool GroupCreated);

/// <summary>
/// The subscribe use case, in no protocol's terms: the limits of a subscription, the caller's grants (consume on the
/// topic and group; publish on an explicit dead-letter topic, which the broker writes for the group), the topic
/// (created on first use with AutoCreateTopics) and the group (created with the given start and rules if new). A front
/// end turns its request into a <see cref="SubscribeSpec"/> and the membership into its deliveries.
/// </summary>
internal sealed class Subscribing(TopicResolver topics)
{
    public const int DefaultMaxInFlight = 256;
    public const int MaxMaxInFlight = 100_000;

    public async Task<Joined> JoinAsync(Caller caller, SubscribeSpec spec, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(spec.Topic) || string.IsNullOrEmpty(spec.Group))
            throw new BrokerException(BrokerErrorCode.InvalidRequest, "subscribe needs a topic and a group");
        if (spec.MaxInFlight is < 0 or > MaxMaxInFlight)
            throw new BrokerException(BrokerErrorCode.InvalidRequest, $"max_in_flight must be at most {MaxMaxInFlight}");
        if (spec.VisibilityTimeout is { } lease && (lease <= TimeSpan.Zero || lease > GroupPolicy.MaxVisibilityTimeout))
            throw new BrokerException(BrokerErrorCode.InvalidRequest, "visibility_timeout_ms must be at most 12 hours");
        caller.Demand(Permission.Consume, spec.Topic, spec.Group);
        if (spec.Policy.DeadLetterTopic is { Length: > 0 } deadLetters)
            caller.Demand(Permission.Publish, deadLetters);

        var topic = await topics.GetTopicAsync(spec.Topic, cancellationToken).ConfigureAwait(false);
        var (group, created) = await topic.GetOrCreateGroupAsync(spec.Group, spec.Start, spec.Policy, cancellationToken).ConfigureAwait(false);
        var member = group.Join(spec.MaxInFlight == 0 ? DefaultMaxInFlight : spec.MaxInFlight, spec.VisibilityTimeout);
        return new Joined(topic, group, member, created);
    }
}
