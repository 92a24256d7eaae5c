using Broker.Server.Security;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Server.Core;

/// <summary>
/// The administration use cases of topics and their groups, one for every front end (gRPC Admin, SQS's queue actions):
/// what each needs of the caller (admin on the topic; publish on a dead-letter topic a group names, which the broker
/// writes on the group's behalf; admin or consume to peek), checked before anything changes, and the limits of the
/// requests. A front end translates its request into these calls and their results into its answer.
/// </summary>
internal sealed class TopicAdmin(TopicStore store)
{
    /// <summary>The most messages one peek returns.</summary>
    public const int MaxPeekMessages = 1000;

    public Task<bool> CreateTopicAsync(Caller caller, string name, bool ifNotExists, TopicRetention? retention, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, name);
        return store.CreateTopicAsync(name, ifNotExists, cancellationToken, retention);
    }

    /// <summary>Replaces the topic's retention; null (a request without one) is refused, after the caller's grant.</summary>
    public async Task<TopicRetention> UpdateRetentionAsync(Caller caller, string name, TopicRetention? retention, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, name);
        if (retention is null)
            throw new BrokerException(BrokerErrorCode.InvalidRequest, "UpdateTopic needs a retention (both limits 0 to keep everything)");
        await store.UpdateRetentionAsync(name, retention, cancellationToken).ConfigureAwait(false);
        return retention;
    }

    public async Task<PurgeResult> PurgeAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, name);
        var topic = await store.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
        return await topic.PurgeAsync(cancellationToken).ConfigureAwait(false);
    }

    public Task DeleteTopicAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, name);
        return store.DeleteTopicAsync(name, cancellationToken);
    }

    public async Task<TopicInfo> DescribeAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, name);
        var topic = await store.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
        return await topic.DescribeAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The topics the caller has some grant on (every topic for <see cref="Caller.Anyone"/>).</summary>
    public IEnumerable<string> ListTopics(Caller caller) => store.ListTopics().Where(caller.Sees);

    /// <summary>
    /// The groups of <paramref name="topic"/> (admin on it; NotFound when missing), or without a topic of every open
    /// topic the caller administers. Opening a topic recovers its logs from disk, which a listing must not do to every
    /// topic on disk: the unopened ones are named, for a second call.
    /// </summary>
    public async Task<(IReadOnlyList<TopicInfo> Described, IReadOnlyList<string> Unopened)> ListGroupsAsync(Caller caller, string? topic,
        CancellationToken cancellationToken)
    {
        if (topic is { Length: > 0 })
            return ([await DescribeAsync(caller, topic, cancellationToken).ConfigureAwait(false)], []);
        var described = new List<TopicInfo>();
        var unopened = new List<string>();
        var open = store.OpenTopics().ToDictionary(opened => opened.Name, StringComparer.Ordinal);
        foreach (string name in store.ListTopics().Where(name => caller.Can(Permission.Admin, name)))
        {
            if (!open.TryGetValue(name, out var opened))
            {
                unopened.Add(name);
                continue;
            }
            try
            {
                described.Add(await opened.DescribeAsync(cancellationToken).ConfigureAwait(false));
            }
            catch (BrokerException) when (!store.ListTopics().Contains(name, StringComparer.Ordinal))
            {
                // Deleted since OpenTopics: it has no groups to list. A topic that failed still exists, and its error is the answer.
            }
        }
        return (described, unopened);
    }

    /// <summary>Creates <paramref name="group"/>; false when it existed (and is left as it was).</summary>
    public async Task<bool> CreateGroupAsync(Caller caller, string topic, string group, GroupStart start, GroupPolicy? policy,
        CancellationToken cancellationToken)
    {
        DemandGroupAdmin(caller, topic, policy);
        var opened = await store.GetTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        var (_, created) = await opened.GetOrCreateGroupAsync(group, start, policy, cancellationToken).ConfigureAwait(false);
        return created;
    }

    /// <summary>
    /// Creates the topic and its group as one request (SQS's CreateQueue): everything the caller needs is checked
    /// before either is created, so a refusal leaves nothing behind. Either may exist already. <paramref name="properties"/>
    /// are the topic's when this creates it, and are set on an existing topic before its group is created (so a crash
    /// between the two leaves what a retry finds equal); a group that existed keeps the topic's properties as they are.
    /// Returns the group's policy (its own when it existed, for the caller to compare) and whether the group was created.
    /// </summary>
    public async Task<(GroupPolicy Policy, bool Created)> CreateTopicWithGroupAsync(Caller caller, string topic, string group, GroupStart start,
        GroupPolicy policy, IReadOnlyDictionary<string, string> properties, CancellationToken cancellationToken)
    {
        DemandGroupAdmin(caller, topic, policy);
        TopicProperties.EnsureValid(properties);
        bool topicCreated = await store.CreateTopicAsync(topic, ifNotExists: true, cancellationToken, properties: properties).ConfigureAwait(false);
        var opened = await store.GetTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        if (!topicCreated && properties.Count > 0 && opened.FindGroup(group) is null)
            await store.UpdatePropertiesAsync(topic, properties.ToDictionary(pair => pair.Key, pair => (string?)pair.Value), cancellationToken).ConfigureAwait(false);
        var (existing, created) = await opened.GetOrCreateGroupAsync(group, start, policy, cancellationToken).ConfigureAwait(false);
        return (existing.Policy, created);
    }

    /// <summary>Applies <paramref name="changes"/> to the topic's properties (null removes one); returns them all.</summary>
    public Task<IReadOnlyDictionary<string, string>> UpdatePropertiesAsync(Caller caller, string topic, IReadOnlyDictionary<string, string?> changes,
        CancellationToken cancellationToken) =>
        UpdatePropertiesAsync(caller, topic, _ => changes, cancellationToken);

    /// <summary>As the other overload, the changes made from the current properties where no other change can come between.</summary>
    public Task<IReadOnlyDictionary<string, string>> UpdatePropertiesAsync(Caller caller, string topic,
        Func<IReadOnlyDictionary<string, string>, IReadOnlyDictionary<string, string?>> changes, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, topic);
        return store.UpdatePropertiesAsync(topic, changes, cancellationToken);
    }

    /// <summary>
    /// Replaces the group's policy. The same policy again changes nothing: a replacement ends the group's subscriptions
    /// and voids its leases, which a repeated request (a deploy script, SetQueueAttributes with today's values) must not do.
    /// </summary>
    public Task<GroupPolicy> UpdateGroupAsync(Caller caller, string topic, string group, GroupPolicy policy, CancellationToken cancellationToken)
    {
        DemandGroupAdmin(caller, topic, policy);
        return UpdateGroupAsync(caller, topic, group, _ => policy, cancellationToken);
    }

    /// <summary>
    /// As the other overload, the new policy made from the current one where no other change of the group's rules can
    /// come between (SQS's SetQueueAttributes changes some settings and keeps the rest). Admin on the topic is checked
    /// first; publish on the dead-letter topic the result names, before anything changes.
    /// </summary>
    public async Task<GroupPolicy> UpdateGroupAsync(Caller caller, string topic, string group, Func<GroupPolicy, GroupPolicy> change,
        CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, topic);
        var opened = await store.GetTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        return await opened.UpdateGroupPolicyAsync(group, current =>
        {
            var policy = change(current);
            DemandGroupAdmin(caller, topic, policy);
            return policy;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Moves the group to <paramref name="target"/>; returns its new ack floor.</summary>
    public async Task<long> ResetGroupAsync(Caller caller, string topic, string group, GroupStart target, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, topic);
        var opened = await store.GetTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        return await opened.ResetGroupAsync(group, target, cancellationToken).ConfigureAwait(false);
    }

    public async Task DeleteGroupAsync(Caller caller, string topic, string group, bool force, CancellationToken cancellationToken)
    {
        caller.Demand(Permission.Admin, topic);
        var opened = await store.GetTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        await opened.DeleteGroupAsync(group, force, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Up to <paramref name="maxMessages"/> (1 to <see cref="MaxPeekMessages"/>) messages from an offset, read without consuming.</summary>
    public async Task<IReadOnlyList<StoredMessage>> PeekAsync(Caller caller, string topic, long fromOffset, int maxMessages,
        CancellationToken cancellationToken)
    {
        caller.DemandEither(Permission.Admin, Permission.Consume, topic);
        if (maxMessages is < 1 or > MaxPeekMessages)
            throw new BrokerException(BrokerErrorCode.InvalidRequest, $"max_messages must be 1 to {MaxPeekMessages}; this request asks for {maxMessages}");
        var opened = await store.GetTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        return await opened.PeekAsync(fromOffset, maxMessages, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Admin on the topic, and publish on a dead-letter topic the group names: the broker writes the group's dead
    /// letters there on its behalf (its default, <c>&lt;topic&gt;.dlq</c>, needs nothing more).
    /// </summary>
    private static void DemandGroupAdmin(Caller caller, string topic, GroupPolicy? policy)
    {
        caller.Demand(Permission.Admin, topic);
        if (policy is { DeadLetterTopic.Length: > 0 })
            caller.Demand(Permission.Publish, policy.DeadLetterTopic);
    }
}
