using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Broker.Client;
using Spectre.Console;

namespace Broker.Ctl;

/// <summary>The command tree. Each action opens one client to <c>--address</c> and prints a table or, with --json, JSON.</summary>
internal static class Commands
{
    private static Option<string> _address = null!;
    private static Option<bool> _json = null!;
    private static Option<string?> _apiKey = null!;
    private static Option<FileInfo?> _apiKeyFile = null!;
    private static Option<string?> _caFile = null!;

    public static void Bind(Option<string> address, Option<bool> json, Option<string?> apiKey, Option<FileInfo?> apiKeyFile, Option<string?> caFile)
    {
        _address = address;
        _json = json;
        _apiKey = apiKey;
        _apiKeyFile = apiKeyFile;
        _caFile = caFile;
    }

    internal static (BrokerClient Client, Output Output) Open(ParseResult parse) =>
        (new BrokerClient(new Uri(parse.GetValue(_address)!), ApiKey(parse), new BrokerTlsOptions { CaFile = parse.GetValue(_caFile) }),
            new Output(parse.GetValue(_json), AnsiConsole.Console));

    /// <summary>The key from --api-key-file, else --api-key (or $BROKER_API_KEY); none without either.</summary>
    private static string? ApiKey(ParseResult parse) =>
        parse.GetValue(_apiKeyFile) is { } file ? File.ReadAllText(file.FullName).Trim() : parse.GetValue(_apiKey);

    private static string Invariant(ulong value) => value.ToString("N0", CultureInfo.InvariantCulture);

    public static Command Topics()
    {
        var topics = new Command("topics", "list, describe, create, delete and purge topics");
        var list = new Command("list", "every topic with its size and groups");
        list.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            var rows = new List<object?[]>();
            var document = new JsonArray();
            foreach (string name in await client.ListTopicsAsync(cancellationToken))
            {
                var topic = await client.DescribeTopicAsync(name, cancellationToken);
                rows.Add([name, Invariant(topic.NextOffset - topic.FirstOffset), Invariant(topic.NextOffset), topic.Groups.Count, Invariant(topic.LogBytes)]);
                document.Add(new JsonObject
                {
                    ["name"] = name, ["stored"] = topic.NextOffset - topic.FirstOffset, ["nextOffset"] = topic.NextOffset,
                    ["groups"] = topic.Groups.Count, ["logBytes"] = topic.LogBytes,
                });
            }
            output.Table(["topic", "stored", "next offset", "groups", "log bytes"], rows, document);
            return 0;
        });
        var name = new Argument<string>("topic");
        var describe = new Command("describe", "a topic's groups: backlog, in flight, delayed, consumers, dead letters") { name };
        describe.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            var topic = await client.DescribeTopicAsync(parse.GetValue(name)!, cancellationToken);
            var document = new JsonObject
            {
                ["name"] = topic.Name, ["firstOffset"] = topic.FirstOffset, ["nextOffset"] = topic.NextOffset, ["logBytes"] = topic.LogBytes,
                ["groups"] = new JsonArray(topic.Groups.Select(g => (JsonNode)new JsonObject
                {
                    ["name"] = g.Name, ["backlog"] = g.Backlog, ["inFlight"] = g.InFlight, ["delayed"] = g.Delayed, ["consumers"] = g.Consumers,
                    ["ackFloor"] = g.AckFloor, ["acknowledged"] = g.AcknowledgedTotal, ["deadLettered"] = g.DeadLetteredTotal,
                    ["oldestUnackedAgeMs"] = g.OldestUnackedAgeMs,
                    ["settings"] = JsonNode.Parse(Google.Protobuf.JsonFormatter.Default.Format(g.Settings)),
                }).ToArray()),
            };
            output.Table(["group", "backlog", "in flight", "delayed", "consumers", "acked", "dead-lettered", "oldest unacked", "rules"],
                topic.Groups.Select(g => new object?[]
                {
                    g.Name, Invariant(g.Backlog), Invariant(g.InFlight), Invariant(g.Delayed), g.Consumers, Invariant(g.AcknowledgedTotal),
                    Invariant(g.DeadLetteredTotal), g.OldestUnackedAgeMs == 0 ? "-" : TimeSpan.FromMilliseconds(g.OldestUnackedAgeMs).ToString("g", CultureInfo.InvariantCulture),
                    GroupRules.Describe(g.Settings),
                }), document);
            return 0;
        });
        var ifNotExists = new Option<bool>("--if-not-exists") { Description = "succeed when it exists already" };
        var create = new Command("create", "create a topic") { name, ifNotExists };
        create.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            bool created = await client.CreateTopicAsync(parse.GetValue(name)!, parse.GetValue(ifNotExists), cancellationToken);
            output.Line(created ? $"created {parse.GetValue(name)}" : $"{parse.GetValue(name)} exists already",
                new JsonObject { ["topic"] = parse.GetValue(name), ["created"] = created });
            return 0;
        });
        var delete = new Command("delete", "delete a topic and everything stored in it") { name };
        delete.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            await client.DeleteTopicAsync(parse.GetValue(name)!, cancellationToken);
            output.Line($"deleted {parse.GetValue(name)}", new JsonObject { ["topic"] = parse.GetValue(name), ["deleted"] = true });
            return 0;
        });
        var purge = new Command("purge", "drop every stored message; every group moves to the end") { name };
        purge.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            long purged = await client.PurgeTopicAsync(parse.GetValue(name)!, cancellationToken);
            output.Line($"purged {purged} message(s) from {parse.GetValue(name)}", new JsonObject { ["topic"] = parse.GetValue(name), ["purged"] = purged });
            return 0;
        });
        topics.Subcommands.Add(list);
        topics.Subcommands.Add(describe);
        topics.Subcommands.Add(create);
        topics.Subcommands.Add(delete);
        topics.Subcommands.Add(purge);
        return topics;
    }

    public static Command Groups()
    {
        var groups = new Command("groups", "list, describe, reset and delete consumer groups");
        groups.Subcommands.Add(GroupCommands.List(Open));
        groups.Subcommands.Add(GroupCommands.Describe(Open));
        var topic = new Argument<string>("topic");
        var group = new Argument<string>("group");
        var to = new Option<string>("--to") { Description = "earliest, latest, an offset, or a time (ISO 8601)", Required = true };
        var reset = new Command("reset", "move a group to a position: everything from it is delivered again") { topic, group, to };
        reset.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            string target = parse.GetValue(to)!;
            StartAt start = target switch
            {
                "earliest" => StartAt.Earliest,
                "latest" => StartAt.Latest,
                _ when long.TryParse(target, NumberStyles.None, CultureInfo.InvariantCulture, out long offset) => StartAt.AtOffset(offset),
                _ when DateTimeOffset.TryParse(target, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time) => StartAt.AtTime(time),
                _ => throw new ArgumentException($"--to must be earliest, latest, an offset or an ISO 8601 time, not '{target}'"),
            };
            long floor = await client.ResetGroupAsync(parse.GetValue(topic)!, parse.GetValue(group)!, start, cancellationToken);
            output.Line($"reset {parse.GetValue(group)} on {parse.GetValue(topic)} to offset {floor}",
                new JsonObject { ["topic"] = parse.GetValue(topic), ["group"] = parse.GetValue(group), ["ackFloor"] = floor });
            return 0;
        });
        var force = new Option<bool>("--force") { Description = "delete even while consumers are subscribed (their streams end)" };
        var delete = new Command("delete", "delete a group and its pin on the topic's disk") { topic, group, force };
        delete.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            await client.DeleteGroupAsync(parse.GetValue(topic)!, parse.GetValue(group)!, parse.GetValue(force), cancellationToken);
            output.Line($"deleted group {parse.GetValue(group)} of {parse.GetValue(topic)}",
                new JsonObject { ["topic"] = parse.GetValue(topic), ["group"] = parse.GetValue(group), ["deleted"] = true });
            return 0;
        });
        groups.Subcommands.Add(reset);
        groups.Subcommands.Add(delete);
        return groups;
    }

    public static Command DeadLetters()
    {
        var dlq = new Command("dlq", "dead-letter topics");
        var topic = new Argument<string>("dead-letter-topic");
        var limit = new Option<int>("--limit") { Description = "at most this many (default: all)" };
        var target = new Option<string?>("--to") { Description = "move them to this topic instead of where each came from" };
        var redrive = new Command("redrive", "send dead letters back to the topics they came from") { topic, limit, target };
        redrive.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            var result = await client.RedriveAsync(parse.GetValue(topic)!, parse.GetValue(limit), cancellationToken, parse.GetValue(target));
            output.Line($"redrove {result.Moved} message(s) from {parse.GetValue(topic)}; {result.Skipped} skipped",
                new JsonObject { ["topic"] = parse.GetValue(topic), ["moved"] = result.Moved, ["skipped"] = result.Skipped });
            return 0;
        });
        dlq.Subcommands.Add(redrive);
        var from = new Option<long>("--from") { Description = "the first offset to show (default: the oldest stored)" };
        var count = new Option<int>("--count") { Description = "at most this many, 1 to 1000 (default 10)", DefaultValueFactory = _ => 10 };
        var peek = new Command("peek", "show dead letters with why they died, without taking them") { topic, from, count };
        peek.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            var letters = await client.PeekAsync(parse.GetValue(topic)!, parse.GetValue(from), parse.GetValue(count), cancellationToken);
            var document = new JsonArray(letters.Select(m => (JsonNode)new JsonObject
            {
                ["offset"] = m.Offset,
                ["publishTimeUnixMs"] = m.PublishTime.ToUnixTimeMilliseconds(),
                ["headers"] = new JsonObject(m.Headers.Select(h => KeyValuePair.Create(h.Key, (JsonNode?)h.Value))),
                ["payload"] = m.PayloadText,
            }).ToArray());
            output.Table(["offset", "from", "reason", "deliveries", "payload"], letters.Select(m => new object?[]
            {
                m.Offset.ToString(CultureInfo.InvariantCulture), m.Headers.GetValueOrDefault("broker-dlq-original-topic"), m.Headers.GetValueOrDefault("broker-dlq-reason"),
                m.Headers.GetValueOrDefault("broker-dlq-delivery-count"), m.PayloadText.Length > 60 ? m.PayloadText[..60] + "…" : m.PayloadText,
            }), document);
            return 0;
        });
        dlq.Subcommands.Add(peek);
        return dlq;
    }

    public static Command Stats()
    {
        var stats = new Command("stats", "the server's process numbers");
        stats.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = Open(parse);
            using var _ = client;
            var numbers = await client.GetServerStatsAsync(cancellationToken);
            var document = JsonNode.Parse(Google.Protobuf.JsonFormatter.Default.Format(numbers))!;
            output.Table(["stat", "value"], document.AsObject().Select(pair => new object?[] { pair.Key, pair.Value?.ToString() }), document);
            return 0;
        });
        return stats;
    }

    public static Command Publish() => Streams.Publish(Open);

    public static Command Consume() => Streams.Consume(Open);
}
