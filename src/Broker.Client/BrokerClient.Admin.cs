using Broker.Protocol.V1;

namespace Broker.Client;

/// <summary>A topic's retention: what it keeps regardless of its groups; null means no limit.</summary>
public sealed record RetentionOptions
{
    /// <summary>Messages older than this are deleted (a group with a consumer subscribed, or idle for less than the broker's grace, is never passed).</summary>
    public TimeSpan? MaxAge { get; init; }

    /// <summary>The oldest messages are deleted while the topic's log holds more than this many bytes.</summary>
    public long? MaxBytes { get; init; }

    internal TopicRetention ToProto() => new()
    {
        MaxAgeMs = MaxAge is { } age ? (ulong)Math.Max(1, age.TotalMilliseconds) : 0,
        MaxBytes = MaxBytes is { } bytes ? (ulong)Math.Max(1, bytes) : 0,
    };
}

// Replay and group administration (docs/semantics.md, "Replay and group administration", "Retention"). Kept in a file of
// its own, beside the rest of the client.
public sealed partial class BrokerClient
{
    /// <summary>Creates a topic with a retention; returns false when it existed and <paramref name="ifNotExists"/> is true (it keeps its own).</summary>
    public Task<bool> CreateTopicAsync(string name, RetentionOptions retention, bool ifNotExists = true, CancellationToken cancellationToken = default) =>
        Call(async () => (await _admin.CreateTopicAsync(new CreateTopicRequest { Name = name, IfNotExists = ifNotExists, Retention = retention.ToProto() },
            cancellationToken: cancellationToken)).Created);

    /// <summary>Replaces a topic's retention (an empty <see cref="RetentionOptions"/> keeps everything); durable when it returns.</summary>
    public Task UpdateTopicRetentionAsync(string name, RetentionOptions retention, CancellationToken cancellationToken = default) =>
        Call(async () => await _admin.UpdateTopicAsync(new UpdateTopicRequest { Name = name, Retention = retention.ToProto() }, cancellationToken: cancellationToken));

    /// <summary>Drops every message of the topic; every group moves to the end. Returns how many were dropped.</summary>
    public Task<long> PurgeTopicAsync(string name, CancellationToken cancellationToken = default) =>
        Call(async () => (long)(await _admin.PurgeTopicAsync(new PurgeTopicRequest { Name = name }, cancellationToken: cancellationToken)).Purged);

    /// <summary>
    /// Moves an existing group to <paramref name="to"/> (an offset, a time, the oldest message, the end): from there on
    /// everything is unacknowledged. The group's subscriptions end (UNAVAILABLE, error 1203). Returns the new ack floor.
    /// </summary>
    public Task<long> ResetGroupAsync(string topic, string group, StartAt to, CancellationToken cancellationToken = default)
    {
        var request = new ResetGroupRequest
        {
            Topic = topic,
            Group = group,
            Position = to.Position,
            Offset = (ulong)Math.Max(0, to.Offset),
            TimeUnixMs = to.Time.ToUnixTimeMilliseconds(),
        };
        return Call(async () => (long)(await _admin.ResetGroupAsync(request, cancellationToken: cancellationToken)).AckFloor);
    }

    /// <summary>
    /// Replaces a group's delivery rules with <paramref name="options"/> as a whole (unset ones take the defaults),
    /// keeping its position, acks and delivery counts. Its subscriptions end (UNAVAILABLE, error 1203) and subscribe
    /// again; what they held is delivered again. Returns the rules in force.
    /// </summary>
    public Task<GroupSettings> UpdateGroupAsync(string topic, string group, GroupOptions options, CancellationToken cancellationToken = default) =>
        Call(async () => (await _admin.UpdateGroupAsync(new UpdateGroupRequest { Topic = topic, Group = group, Settings = options.ToProto() },
            cancellationToken: cancellationToken)).Settings);

    /// <summary>
    /// Up to <paramref name="maxMessages"/> (1 to 1000) stored messages of <paramref name="topic"/> from
    /// <paramref name="fromOffset"/> on, read without consuming them (dead letters with their headers, for one).
    /// </summary>
    public Task<IReadOnlyList<ReceivedMessage>> PeekAsync(string topic, long fromOffset = 0, int maxMessages = 10, CancellationToken cancellationToken = default) =>
        Call(async () => (IReadOnlyList<ReceivedMessage>)[.. (await _admin.PeekAsync(new PeekRequest
        {
            Topic = topic, FromOffset = (ulong)Math.Max(0, fromOffset), MaxMessages = (uint)Math.Max(1, maxMessages),
        }, cancellationToken: cancellationToken)).Messages.Select(m => ReceivedMessage.FromProto(m))]);

    /// <summary>
    /// Consumer groups with their backlog, in flight, delayed, consumers, oldest unacknowledged age, settings and
    /// dead-letter topic: of <paramref name="topic"/> only (opening it on the broker if needed; NOT_FOUND, error 1001, when
    /// it does not exist), or of every topic open on the broker, the others named in
    /// <see cref="ListGroupsResponse.UnopenedTopics"/>.
    /// </summary>
    public Task<ListGroupsResponse> ListGroupsAsync(string? topic = null, CancellationToken cancellationToken = default) =>
        Call(async () => await _admin.ListGroupsAsync(new ListGroupsRequest { Topic = topic ?? "" }, cancellationToken: cancellationToken));

    /// <summary>Deletes a group; with consumers subscribed only when <paramref name="force"/> is true (their subscriptions end).</summary>
    public Task DeleteGroupAsync(string topic, string group, bool force = false, CancellationToken cancellationToken = default) =>
        Call(async () => await _admin.DeleteGroupAsync(new DeleteGroupRequest { Topic = topic, Group = group, Force = force }, cancellationToken: cancellationToken));
}
