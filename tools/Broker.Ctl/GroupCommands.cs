using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Broker.Client;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.Ctl;

/// <summary>groups list and groups describe, on Admin.ListGroups: one row per group across topics, or one group in full.</summary>
internal static class GroupCommands
{
    public static Command List(Func<ParseResult, (BrokerClient, Output)> open)
    {
        var topic = new Option<string?>("--topic", "-t") { Description = "only this topic's groups (opens it on the broker if needed)" };
        var list = new Command("list", "consumer groups across topics: backlog, in flight, delayed, consumers, oldest unacked, dead letters") { topic };
        list.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = open(parse);
            using var _ = client;
            var listing = await client.ListGroupsAsync(parse.GetValue(topic), cancellationToken);
            var document = new JsonObject
            {
                ["groups"] = new JsonArray(listing.Groups.Select(g => (JsonNode)ToJson(g)).ToArray()),
                ["unopenedTopics"] = new JsonArray(listing.UnopenedTopics.Select(t => (JsonNode?)t).ToArray()),
            };
            output.Table(["topic", "group", "backlog", "in flight", "delayed", "consumers", "oldest unacked", "dead letters to"],
                listing.Groups.Select(g => new object?[]
                {
                    g.Topic, g.Group.Name, Count(g.Group.Backlog), Count(g.Group.InFlight), Count(g.Group.Delayed), g.Group.Consumers,
                    Age(g.Group.OldestUnackedAgeMs), g.DeadLetterTopic.Length == 0 ? "-" : g.DeadLetterTopic,
                }), document);
            if (listing.UnopenedTopics.Count > 0)
                output.Note($"{listing.UnopenedTopics.Count} topic(s) not used since the broker started, their groups not listed " +
                            $"(--topic TOPIC lists one): {string.Join(", ", listing.UnopenedTopics)}");
            return 0;
        });
        return list;
    }

    public static Command Describe(Func<ParseResult, (BrokerClient, Output)> open)
    {
        var topic = new Argument<string>("topic");
        var group = new Argument<string>("group");
        var describe = new Command("describe", "one group in full: its numbers, its rules and where its dead letters go") { topic, group };
        describe.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = open(parse);
            using var _ = client;
            string topicName = parse.GetValue(topic)!, groupName = parse.GetValue(group)!;
            var listing = await client.ListGroupsAsync(topicName, cancellationToken);
            // The broker answers for the topic; a missing group is reported as the broker reports one (NOT_FOUND, 1009),
            // so scripts see one shape of error and exit code 1 either way.
            var found = listing.Groups.SingleOrDefault(g => g.Group.Name == groupName)
                ?? throw new BrokerClientException(StatusCode.NotFound, 1009, $"group '{groupName}' of topic '{topicName}' does not exist");
            var g = found.Group;
            output.Table(["field", "value"], new object?[][]
            {
                ["topic", found.Topic], ["group", g.Name], ["backlog", Count(g.Backlog)], ["in flight", Count(g.InFlight)],
                ["delayed", Count(g.Delayed)], ["consumers", g.Consumers], ["ack floor", Count(g.AckFloor)],
                ["acked", Count(g.AcknowledgedTotal)], ["redelivered", Count(g.RedeliveredTotal)], ["dead-lettered", Count(g.DeadLetteredTotal)],
                ["oldest unacked", Age(g.OldestUnackedAgeMs)], ["dead letters to", found.DeadLetterTopic.Length == 0 ? "-" : found.DeadLetterTopic],
                ["rules", GroupRules.Describe(g.Settings)],
            }, ToJson(found));
            return 0;
        });
        return describe;
    }

    /// <summary>One group as both commands print it with --json (the counters "since the broker started" included).</summary>
    private static JsonObject ToJson(GroupListing listing) => new()
    {
        ["topic"] = listing.Topic, ["group"] = listing.Group.Name, ["backlog"] = listing.Group.Backlog, ["inFlight"] = listing.Group.InFlight,
        ["delayed"] = listing.Group.Delayed, ["consumers"] = listing.Group.Consumers, ["ackFloor"] = listing.Group.AckFloor,
        ["acknowledged"] = listing.Group.AcknowledgedTotal, ["redelivered"] = listing.Group.RedeliveredTotal,
        ["deadLettered"] = listing.Group.DeadLetteredTotal, ["oldestUnackedAgeMs"] = listing.Group.OldestUnackedAgeMs,
        ["deadLetterTopic"] = listing.DeadLetterTopic.Length == 0 ? null : listing.DeadLetterTopic,
        ["settings"] = JsonNode.Parse(Google.Protobuf.JsonFormatter.Default.Format(listing.Group.Settings)),
    };

    private static string Count(ulong value) => value.ToString("N0", CultureInfo.InvariantCulture);

    private static string Age(ulong milliseconds) =>
        milliseconds == 0 ? "-" : TimeSpan.FromMilliseconds(milliseconds).ToString("g", CultureInfo.InvariantCulture);
}
