using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Broker.Client;

namespace Broker.Ctl;

/// <summary>
/// tail: follows a topic's new messages like <c>tail -f</c>, until Ctrl+C or --count. It reads with Admin.Peek from the
/// topic's end instead of subscribing: no group is created, nothing is leased or acknowledged, so the groups that do
/// the work see every message as if nobody watched (consume --no-ack would hold the messages it shows until it ends).
/// </summary>
internal static class Tail
{
    // Peek answers at most 1000 a call; smaller pages keep a burst's first lines on screen sooner.
    private const int PageSize = 200;

    public static Command Command(Func<ParseResult, (BrokerClient, Output)> open)
    {
        var topic = new Argument<string>("topic");
        var last = new Option<long>("--last", "-l") { Description = "start this many messages before the end (default 0: only new messages)" };
        var from = new Option<long?>("--from") { Description = "start at this offset instead (the oldest stored when it is gone)" };
        var count = new Option<int>("--count", "-n") { Description = "stop after this many messages (default: until Ctrl+C)" };
        var poll = new Option<double>("--poll") { Description = "seconds between looks for new messages when none came", DefaultValueFactory = _ => 0.5 };
        var tail = new Command("tail", "follow a topic's messages as they arrive, without a group and without taking them; Ctrl+C stops")
        {
            topic, last, from, count, poll,
        };
        tail.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = open(parse);
            using var _ = client;
            string name = parse.GetValue(topic)!;
            int wanted = parse.GetValue(count);
            if (wanted < 0 || parse.GetValue(last) < 0 || parse.GetValue(poll) <= 0)
                throw new ArgumentException("--count and --last must not be negative, --poll must be above 0");
            long next = parse.GetValue(from) ?? Math.Max(0, (long)(await client.DescribeTopicAsync(name, cancellationToken)).NextOffset - parse.GetValue(last));
            int shown = 0;
            try
            {
                while (wanted == 0 || shown < wanted)
                {
                    var page = await client.PeekAsync(name, next, wanted == 0 ? PageSize : Math.Min(PageSize, wanted - shown), cancellationToken);
                    foreach (var message in page)
                    {
                        Print(output, message);
                        next = message.Offset + 1;
                    }
                    shown += page.Count;
                    if (page.Count == 0)
                        await Task.Delay(TimeSpan.FromSeconds(parse.GetValue(poll)), cancellationToken);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // Ctrl+C (or SIGTERM) is how a tail normally ends: not a failure.
            }
            catch (BrokerClientException) when (cancellationToken.IsCancellationRequested)
            {
                // A call cut short by Ctrl+C surfaces as the client's Cancelled status.
            }
            return 0;
        });
        return tail;
    }

    private static void Print(Output output, ReceivedMessage message)
    {
        var headers = new JsonObject();
        foreach (var (key, value) in message.Headers)
            headers[key] = value;
        output.Line($"{message.Offset.ToString(CultureInfo.InvariantCulture)}\t{message.PayloadText}", new JsonObject
        {
            ["offset"] = message.Offset, ["publishTimeUnixMs"] = message.PublishTime.ToUnixTimeMilliseconds(), ["headers"] = headers,
            ["payload"] = message.PayloadText,
        });
    }
}
