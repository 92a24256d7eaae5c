using System.Text.Json.Nodes;
using Broker.Storage.Errors;
using Broker.Storage.Groups;

namespace Broker.Server.Sqs;

/// <summary>SQS deletes and visibility changes: acks, nacks and lease extensions of the group.</summary>
internal sealed partial class SqsActions
{
    private async Task<JsonObject> DeleteMessageAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        var delivery = receipts.Decode(queue.Name, input.String("ReceiptHandle"));
        await SettleOneAsync(queue, new SettleAction.Ack(), delivery).ConfigureAwait(false);
        return [];
    }

    private async Task<JsonObject> ChangeMessageVisibilityAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        var delivery = receipts.Decode(queue.Name, input.String("ReceiptHandle"));
        if (!input.Has("VisibilityTimeout"))
            throw SqsException.MissingParameter("VisibilityTimeout");
        await SettleOneAsync(queue, VisibilityAction(input.Int("VisibilityTimeout", 0, 0, MaxVisibilitySeconds)), delivery).ConfigureAwait(false);
        return [];
    }

    /// <summary>0: visible again now (the receive stays counted, as in SQS); otherwise a new lease from now.</summary>
    private static SettleAction VisibilityAction(int seconds) => seconds switch
    {
        < 0 => throw SqsException.MissingParameter("VisibilityTimeout"),
        0 => new SettleAction.Retry(TimeSpan.Zero, null),
        _ => new SettleAction.Extend(TimeSpan.FromSeconds(seconds)),
    };

    private static async Task SettleOneAsync(SqsQueue queue, SettleAction action, DeliveryRef delivery)
    {
        var result = await queue.Group.SettleAsync(action, [delivery]).ConfigureAwait(false);
        if (result.Failures is [var failure, ..])
            throw Stale(failure);
    }

    /// <summary>All valid entries in one ack frame: one durable commit for the batch, not one per entry.</summary>
    private async Task<JsonObject> DeleteMessageBatchAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        var successful = new JsonArray();
        var failed = new JsonArray();
        var valid = new List<(string Id, DeliveryRef Delivery)>();
        foreach (var entry in CheckedEntries(input))
        {
            string id = entry.String("Id")!;
            try
            {
                valid.Add((id, receipts.Decode(queue.Name, entry.String("ReceiptHandle"))));
            }
            catch (SqsException error)
            {
                failed.Add(Failure(id, error));
            }
        }
        if (valid.Count > 0)
        {
            var result = await queue.Group.SettleAsync(new SettleAction.Ack(), valid.Select(v => v.Delivery).ToList()).ConfigureAwait(false);
            // Two entries may carry the same handle: the first refusal of a delivery answers for both.
            var refused = result.Failures.GroupBy(f => f.Delivery).ToDictionary(g => g.Key, g => g.First());
            foreach (var (id, delivery) in valid)
            {
                if (refused.TryGetValue(delivery, out var failure))
                    failed.Add(Failure(id, Stale(failure)));
                else
                    successful.Add(new JsonObject { ["Id"] = id });
            }
        }
        return new JsonObject { ["Successful"] = successful, ["Failed"] = failed };
    }

    private async Task<JsonObject> SettleBatchAsync(SqsInput input, Func<SqsInput, SettleAction> actionOf, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        var successful = new JsonArray();
        var failed = new JsonArray();
        foreach (var entry in CheckedEntries(input))
        {
            string id = entry.String("Id")!;
            try
            {
                var delivery = receipts.Decode(queue.Name, entry.String("ReceiptHandle"));
                await SettleOneAsync(queue, actionOf(entry), delivery).ConfigureAwait(false);
                successful.Add(new JsonObject { ["Id"] = id });
            }
            catch (SqsException error)
            {
                failed.Add(Failure(id, error));
            }
        }
        return new JsonObject { ["Successful"] = successful, ["Failed"] = failed };
    }

    private static SqsException Stale(SettleFailure failure) => failure.Code switch
    {
        BrokerErrorCode.StaleDeliveryToken => SqsException.ReceiptHandleIsInvalid(
            "the message was received again since, or was already deleted (this broker refuses a stale handle instead of guessing)"),
        BrokerErrorCode.UnknownDelivery => SqsException.ReceiptHandleIsInvalid("the message is not in flight"),
        _ => SqsException.Internal(failure.Message),
    };
}
