using Broker.Protocol.V1;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using Google.Protobuf;
using StoredBackoff = Broker.Storage.Groups.RetryBackoff;
using WireBackoff = Broker.Protocol.V1.RetryBackoff;
using StoredFilter = Broker.Storage.Groups.GroupFilter;
using WireFilter = Broker.Protocol.V1.GroupFilter;
using StoredRetention = Broker.Storage.Topics.TopicRetention;

namespace Broker.Server.Grpc;

/// <summary>Between wire types and storage types, without copying payloads where that is safe.</summary>
internal static class ProtoConversions
{
    public static AppendMessage[] ToAppendMessages(PublishRequest request)
    {
        var messages = new AppendMessage[request.Messages.Count];
        for (int i = 0; i < messages.Length; i++)
        {
            var message = request.Messages[i];
            IReadOnlyList<KeyValuePair<string, string>> headers = message.Headers.Count == 0 ? [] : message.Headers.ToArray();
            // The request owns these buffers until the append has copied them into the log.
            messages[i] = new AppendMessage(message.Key.Memory, headers, message.Payload.Memory)
            {
                // Beyond a long's range is beyond the horizon too: capped, so storage refuses it rather than it wrapping.
                Delay = TimeSpan.FromMilliseconds(Math.Min(message.DelayMs, (ulong)TimeSpan.MaxValue.TotalMilliseconds / 2)),
                DeliverAtUnixMs = message.DeliverAtUnixMs,
                MessageId = message.MessageId.Length == 0 ? null : message.MessageId,
                // Out of range stays out of range (the append refuses it with the message's index).
                Priority = (int)Math.Min(message.Priority, int.MaxValue),
            };
        }
        return messages;
    }

    public static Delivery ToDelivery(string topic, GroupDelivery delivery)
    {
        var stored = delivery.Message;
        var proto = new Delivery
        {
            Topic = topic,
            Offset = (ulong)stored.Offset,
            // Wrapped, not copied: the stored bytes stay untouched until the frame is written (see ReadBufferLease).
            Key = UnsafeByteOperations.UnsafeWrap(stored.Key),
            Payload = UnsafeByteOperations.UnsafeWrap(stored.Payload),
            PublishTimeUnixMs = stored.PublishTimeUnixMs,
            Attempt = (uint)delivery.Attempt,
            Token = delivery.Token,
        };
        if (stored.Schedule is { } schedule)
            proto.Scheduled = new ScheduledDelivery { DeliverAtUnixMs = schedule.DeliverAtUnixMs, PublishedOffset = (ulong)schedule.RecordOffset };
        // Indexed, not foreach: an enumerator of an IReadOnlyList is an allocation per delivery.
        var headers = stored.Headers;
        for (int i = 0; i < headers.Count; i++)
            proto.Headers[headers[i].Key] = headers[i].Value;
        return proto;
    }

    /// <summary>Where a durable batch landed, as PublishResponse says it (request id and error aside).</summary>
    public static PublishResponse ToPublishResponse(AppendResult result, ulong requestId = 0)
    {
        var response = new PublishResponse { RequestId = requestId, FirstOffset = (ulong)result.FirstOffset, Count = (uint)result.Count };
        foreach (var (index, offset) in result.Duplicates)
            response.Duplicates.Add(new PublishedDuplicate { Index = (uint)index, Offset = (ulong)offset });
        return response;
    }

    /// <summary>A group's policy from wire settings; zero fields take the defaults (max deliveries: the topic's, see <see cref="GroupPolicy.ResolvedFor"/>).</summary>
    public static GroupPolicy ToPolicy(GroupSettings? settings)
    {
        var defaults = GroupPolicy.Default;
        if (settings is null)
            return defaults;
        return new GroupPolicy(
            settings.VisibilityTimeoutMs == 0 ? defaults.VisibilityTimeout : TimeSpan.FromMilliseconds(settings.VisibilityTimeoutMs),
            // Out of range stays out of range (the policy refuses it), never wraps into the unlimited value.
            (int)Math.Min(settings.MaxDeliveries, GroupPolicy.UnlimitedDeliveries - 1),
            settings.DeadLetterTopic,
            ToBackoff(settings.RetryBackoff),
            settings.OrderedByKey,
            settings.Filter is { } filter ? new StoredFilter([.. filter.KeyPatterns], [.. filter.Headers.OrderBy(h => h.Key, StringComparer.Ordinal)]) : null,
            (int)Math.Min(settings.PriorityLevels, int.MaxValue),
            settings.NewestFirst);
    }

    // Zero fields take their defaults; out-of-range values are kept for the policy to refuse with its reason.
    private static StoredBackoff? ToBackoff(WireBackoff? backoff) => backoff is null ? null : new StoredBackoff(
        TimeSpan.FromMilliseconds(backoff.InitialMs),
        TimeSpan.FromMilliseconds(backoff.MaxMs == 0 ? backoff.InitialMs : backoff.MaxMs),
        backoff.Multiplier == 0 ? StoredBackoff.DefaultMultiplier : backoff.Multiplier,
        backoff.Jitter);

    public static GroupSettings ToSettings(GroupPolicy policy) => new()
    {
        VisibilityTimeoutMs = (uint)policy.VisibilityTimeout.TotalMilliseconds,
        MaxDeliveries = policy.MaxDeliveries == GroupPolicy.UnlimitedDeliveries ? 0 : (uint)policy.MaxDeliveries,
        DeadLetterTopic = policy.DeadLetterTopic,
        OrderedByKey = policy.OrderedByKey,
        PriorityLevels = (uint)policy.PriorityLevels,
        NewestFirst = policy.NewestFirst,
        Filter = policy.Filter is { } filter ? new WireFilter { KeyPatterns = { filter.KeyPatterns }, Headers = { filter.Headers.ToDictionary() } } : null,
        RetryBackoff = policy.RetryBackoff is { } backoff
            ? new WireBackoff
            {
                InitialMs = (uint)backoff.Initial.TotalMilliseconds,
                MaxMs = (uint)backoff.Max.TotalMilliseconds,
                Multiplier = backoff.Multiplier,
                Jitter = backoff.Jitter,
            }
            : null,
    };

    public static GroupStart ToStart(StartPosition position, ulong offset, long timeUnixMs) => position switch
    {
        StartPosition.Earliest => GroupStart.Earliest,
        StartPosition.Latest => GroupStart.Latest,
        StartPosition.Offset => GroupStart.AtOffset((long)Math.Min(offset, long.MaxValue)),
        StartPosition.Timestamp => GroupStart.AtTime(timeUnixMs),
        _ => throw BrokerStatus.InvalidRequest($"unknown start position {position}"),
    };

    /// <summary>A topic's retention from the wire (null when unset); values beyond a long's range mean "no limit" in practice and are capped.</summary>
    public static StoredRetention? ToRetention(Protocol.V1.TopicRetention? retention) => retention is null
        ? null
        : new StoredRetention((long)Math.Min(retention.MaxAgeMs, long.MaxValue), (long)Math.Min(retention.MaxBytes, long.MaxValue));

    public static Protocol.V1.TopicRetention ToProto(StoredRetention retention) =>
        new() { MaxAgeMs = (ulong)Math.Max(0, retention.MaxAgeMs), MaxBytes = (ulong)Math.Max(0, retention.MaxBytes) };

    public static TopicDescription ToDescription(TopicInfo info, long nowUnixMs)
    {
        var description = new TopicDescription
        {
            Name = info.Name,
            FirstOffset = (ulong)info.FirstOffset,
            NextOffset = (ulong)info.NextOffset,
            LogBytes = (ulong)info.LogBytes,
            Retention = ToProto(info.Retention),
            Scheduled = (ulong)info.ScheduledCount,
        };
        foreach (var group in info.Groups)
            description.Groups.Add(ToGroupDescription(group, nowUnixMs));
        return description;
    }

    public static GroupDescription ToGroupDescription(GroupInfo group, long nowUnixMs) => new()
    {
        Name = group.Name,
        AckFloor = (ulong)group.AckFloor,
        InFlight = (ulong)group.InFlight,
        Backlog = (ulong)group.Backlog,
        Consumers = (uint)group.Consumers,
        Delayed = (ulong)group.Delayed,
        AcknowledgedTotal = (ulong)group.AcknowledgedTotal,
        RedeliveredTotal = (ulong)group.RedeliveredTotal,
        DeadLetteredTotal = (ulong)group.DeadLetteredTotal,
        OldestUnackedAgeMs = group.OldestUnackedPublishUnixMs is long oldest ? (ulong)Math.Max(0, nowUnixMs - oldest) : 0,
        Settings = ToSettings(group.Policy),
    };

    /// <summary>A group of <paramref name="info"/>'s topic as ListGroups lists it: its description and where its dead letters go.</summary>
    public static GroupListing ToListing(TopicInfo info, GroupInfo group, long nowUnixMs) => new()
    {
        Topic = info.Name,
        Group = ToGroupDescription(group, nowUnixMs),
        DeadLetterTopic = group.Policy.DeadLettersFailures ? group.Policy.DeadLetterTopicFor(info.Name) : "",
    };
}
